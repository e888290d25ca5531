/**
 * Errors of Baton's own machine met while opening a connection (its socket, or the lookup of its host
 * name), before any byte went out: its file descriptors (the process's open-files limit, EMFILE, or the
 * system's, ENFILE) or kernel buffers for a socket. The machine's to wait out, not the peer's failure:
 * a webhook call so refused is no attempt of the provider's (src/adapters/http-client.ts), a database
 * connection so refused is an outage (src/db/errors.ts). EADDRNOTAVAIL is left out: besides the
 * ephemeral ports running out, a connect gives it for an IPv6 target on a machine with no IPv6 address,
 * which is the target's to fix, and a delivery that never counted an attempt for it would wait forever.
 */
export type MachineShortage = 'EMFILE' | 'ENFILE' | 'ENOBUFS' | 'ENOMEM'

const CODES = new Set<string>(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM'])
/** The steps of a connection, before anything is written, at which such an error says nothing was sent. */
const CONNECTING = new Set<unknown>(['connect', 'getaddrinfo', 'socket'])

/** The shortage of this machine that failed a connection as it opened; undefined for any other error (a write on an open one too). */
export function machineShortage(error: unknown): MachineShortage | undefined {
  const { code, syscall } = (error ?? {}) as { code?: unknown; syscall?: unknown }
  return typeof code === 'string' && CODES.has(code) && CONNECTING.has(syscall) ? code as MachineShortage : undefined
}
