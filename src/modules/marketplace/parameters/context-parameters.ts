/** Query parameters Baton itself puts on every webhook call (README, How a call looks); a service's own parameters may not use these names. */
export const CONTEXT_PARAMETERS = [
  'customerWebId',
  'customerName',
  'userId',
  'estateId',
  'addressId',
  'processId',
  'stepId',
  'deliveryId',
  'timestamp',
  'apiClaim',
  'signature',
  'event',
  'changedFields'
] as const

export const PARAMETER_NAME = /^[A-Za-z][A-Za-z0-9_]*$/

export function isContextParameter(name: string): boolean {
  return (CONTEXT_PARAMETERS as readonly string[]).some((c) => c.toLowerCase() === name.toLowerCase())
}
