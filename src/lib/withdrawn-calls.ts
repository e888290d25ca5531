/**
 * Why a trigger's call was withdrawn before it was made: its delivery ends `cancelled` with one of these
 * as `lastError`, in the same words whether the request that withdrew it cancelled it (records and
 * trigger-repository.ts) or a worker's claim found it so (scheduler/deliver.ts), so a client can filter on them.
 */
export const WITHDRAWN = {
  recordDeleted: (record: 'property' | 'address') => `cancelled: the ${record} was deleted before the call`,
  triggerGone: 'cancelled: no trigger of the service watches this change any more (deleted or changed before the call)',
  deactivated: 'cancelled: the tenant deactivated the service before the call'
} as const
