/**
 * OpenSSL's reasons for refusing a server's certificate chain, as node names them; a leaf that names
 * another host is node's own ERR_TLS_CERT_ALTNAME_INVALID. Read by the webhook client and by the
 * database's connection errors.
 */
const CERTIFICATE_REFUSED = new Set([
  'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_REVOKED', 'CERT_REJECTED', 'CERT_UNTRUSTED', 'CERT_SIGNATURE_FAILURE',
  'CERT_CHAIN_TOO_LONG', 'INVALID_CA', 'INVALID_PURPOSE', 'PATH_LENGTH_EXCEEDED', 'HOSTNAME_MISMATCH',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD', 'ERROR_IN_CERT_NOT_AFTER_FIELD', 'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE'
])

/** Of those, the ones that mean the chain ends at no authority the process trusts (a private CA, a self-signed certificate). */
const UNTRUSTED_ISSUER = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT'
])

/** OpenSSL's reason for a handshake that broke, without its internals (a thread's address, a source file); undefined when it gives none. */
function handshakeReason(message: string): string | undefined {
  return /SSL routines:[^:]*:([^:\n]+)/.exec(message)?.[1]
}

/**
 * What a TLS connection that could not be made met, for each caller to word: a certificate for
 * another name (`said`: node's reason), one whose chain ends at no authority trusted, one refused
 * otherwise (`said`: node's message without the advice Node 24 adds after a semicolon), or a
 * handshake that broke (`said`: OpenSSL's reason). Undefined for any other error.
 */
export function tlsRefusal(error: Error): { kind: 'otherName' | 'untrusted' | 'refused' | 'handshake'; said: string } | undefined {
  const { code, reason } = error as { code?: unknown; reason?: unknown }
  const said = error.message.split(';')[0]!
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return { kind: 'otherName', said: typeof reason === 'string' ? reason : said }
  if (typeof code === 'string' && UNTRUSTED_ISSUER.has(code)) return { kind: 'untrusted', said }
  if (typeof code === 'string' && CERTIFICATE_REFUSED.has(code)) return { kind: 'refused', said }
  const broken = handshakeReason(error.message)
  return broken === undefined ? undefined : { kind: 'handshake', said: broken }
}
