/** Bytes a `whsec_` secret must decode to, as the Standard Webhooks spec asks (24 to 64). */
const WHSEC_MIN_BYTES = 24
const WHSEC_MAX_BYTES = 64
/** Characters another secret needs, and how many different ones among them. */
const SECRET_MIN_CHARS = 24
const SECRET_MIN_DISTINCT = 8

/** How a sealed secret begins (src/lib/secret-box.ts). */
const SEALED_PREFIX = 'enc:'

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/**
 * The secrets Baton's own documents show (the README's calls to check a verifier against, the OpenAPI
 * document's example step): anyone can read them, so calls signed with one could be forged by anyone.
 * test/modules/marketplace/secret-strength.test.ts finds every secret those documents show here.
 */
const DOCUMENTED_SECRETS = new Set([
  'whsec_MfKQ9r8GKYqrTUl7kiIcp9O4Tk4bSiB+6n1S1lmGqLs=',
  'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  'whsec_c2VjcmV0LW9mLXRoZS1uZXdzbGV0dGVyLXNlcnZpY2U='
])

/**
 * Why a secret given by the operator cannot be used to sign, or undefined when it can. One shown in
 * Baton's documentation is public (DOCUMENTED_SECRETS). A `whsec_`
 * secret is what Standard Webhooks libraries decode leniently: `whsec_!!!!` decodes to no bytes at
 * all, and calls signed with an empty key can be forged by anyone, so its base64 must be strict.
 * Any other secret is used as its UTF-8 bytes: it must be long, and not one character repeated
 * (random hex of 24 characters has fewer than 8 different ones once in 20,000).
 */
export function secretProblem(secret: string): string | undefined {
  if (DOCUMENTED_SECRETS.has(secret)) {
    return 'is an example from Baton\'s documentation, which anyone can read: use a random secret of your own, such as whsec_ and the output of `openssl rand -base64 32`'
  }
  if (secret.startsWith('whsec_')) return whsecProblem(secret.slice('whsec_'.length))
  // Stored as it is without BATON_SECRETS_KEY, such a secret would be read back as a sealed one that does not open.
  if (secret.startsWith(SEALED_PREFIX)) return `must not start with ${SEALED_PREFIX}, which marks a secret Baton sealed`
  if (/[\s\p{Cc}\p{Cf}]/u.test(secret)) return 'must not contain spaces, line breaks or other control characters'
  if ([...secret].length < SECRET_MIN_CHARS) return `must have at least ${SECRET_MIN_CHARS} characters (or be whsec_ and base64 of ${WHSEC_MIN_BYTES} to ${WHSEC_MAX_BYTES} random bytes)`
  if (new Set(secret).size < SECRET_MIN_DISTINCT) return `must use at least ${SECRET_MIN_DISTINCT} different characters: it looks like a placeholder, not a random secret`
  return undefined
}

function whsecProblem(base64: string): string | undefined {
  if (!BASE64.test(base64)) return 'after whsec_ must come standard base64 (A-Z a-z 0-9 + /, padded with =)'
  const bytes = Buffer.from(base64, 'base64').length
  if (bytes < WHSEC_MIN_BYTES || bytes > WHSEC_MAX_BYTES) {
    return `after whsec_ must come base64 of ${WHSEC_MIN_BYTES} to ${WHSEC_MAX_BYTES} random bytes, not ${bytes}`
  }
  return undefined
}
