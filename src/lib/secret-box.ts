import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto'

/*
 * Secrets Baton must read back (service signing secrets, the apiClaim key) are sealed with AES-256-GCM
 * when BATON_SECRETS_KEY is set: `enc:v1:<key id>:<iv>:<ciphertext>:<tag>`, base64url parts. The key id
 * (8 hex digits of the key's SHA-256) picks the key among the current and the previous one, so a key
 * change needs no downtime; the context (e.g. the service id) is authenticated data, so a sealed value
 * copied to another row does not open. A value without the prefix is plain text from before, and reads
 * as it is: `npm run secrets:reencrypt` seals those too.
 */

const PREFIX = 'enc:v1:'
const ALGORITHM = 'aes-256-gcm'
const KEY_BYTES = 32
/** GCM's whole tag. Node checks as many bytes of a tag as it is given unless told the length: a tag cut short would check less. */
const TAG_BYTES = 16

/** A sealed value names a key this process was not given, or does not open with it. */
export class SecretsKeyError extends Error {
  override name = 'SecretsKeyError'
}

export interface SecretBox {
  /** Whether new values are sealed: a key is configured. */
  readonly sealing: boolean
  seal(plain: string, context: string): string
  /** The plain value of a sealed or a plain one. */
  open(stored: string, context: string): string
  isSealedWithCurrentKey(stored: string): boolean
  sealBytes(plain: Buffer, context: string): Buffer
  openBytes(stored: Buffer, context: string): Buffer
}

/** Why a configured key is unusable, or undefined: 32 bytes in standard base64, as `openssl rand -base64 32` prints. */
export function secretsKeyProblem(text: string): string | undefined {
  if (!/^[A-Za-z0-9+/]{43}=$/.test(text) || Buffer.from(text, 'base64').length !== KEY_BYTES) {
    return 'must be 32 random bytes in base64 (44 characters), e.g. from `openssl rand -base64 32`'
  }
  return undefined
}

interface Key {
  id: string
  bytes: Buffer
}

function toKey(text: string): Key {
  const bytes = Buffer.from(text, 'base64')
  return { id: createHash('sha256').update(bytes).digest('hex').slice(0, 8), bytes }
}

/** A box sealing with `current` (none: values stay plain) and opening with it or `previous`. */
export function createSecretBox(current?: string, previous?: string): SecretBox {
  const sealKey = current ? toKey(current) : undefined
  const keys = [sealKey, previous ? toKey(previous) : undefined].filter((k): k is Key => k !== undefined)
  const seal = (plain: string, context: string): string => {
    if (!sealKey) return plain
    const iv = randomBytes(12)
    const cipher = createCipheriv(ALGORITHM, sealKey.bytes, iv).setAAD(Buffer.from(context))
    const sealed = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()])
    return `${PREFIX}${sealKey.id}:${[iv, sealed, cipher.getAuthTag()].map((b) => b.toString('base64url')).join(':')}`
  }
  const open = (stored: string, context: string): string => {
    if (!stored.startsWith(PREFIX)) return stored
    const [keyId = '', iv = '', sealed = '', tag = ''] = stored.slice(PREFIX.length).split(':')
    const key = keys.find((k) => k.id === keyId)
    if (!key) throw new SecretsKeyError(`A secret in the database is sealed with key ${keyId}, which is neither BATON_SECRETS_KEY nor BATON_SECRETS_KEY_PREVIOUS.`)
    try {
      const decipher = createDecipheriv(ALGORITHM, key.bytes, Buffer.from(iv, 'base64url'), { authTagLength: TAG_BYTES }).setAAD(Buffer.from(context))
      decipher.setAuthTag(Buffer.from(tag, 'base64url'))
      return Buffer.concat([decipher.update(Buffer.from(sealed, 'base64url')), decipher.final()]).toString('utf8')
    } catch {
      throw new SecretsKeyError(`A sealed secret (${context}) does not open with key ${keyId}: it was altered or belongs to another row.`)
    }
  }
  return {
    sealing: sealKey !== undefined,
    seal,
    open,
    isSealedWithCurrentKey: (stored) => sealKey !== undefined && stored.startsWith(`${PREFIX}${sealKey.id}:`),
    // Raw key bytes travel as base64 inside the sealed text; a plain key is 32 random bytes, never the prefix.
    sealBytes: (plain, context) => (sealKey ? Buffer.from(seal(plain.toString('base64'), context)) : plain),
    openBytes: (stored, context) => {
      const text = stored.toString('latin1')
      return text.startsWith(PREFIX) ? Buffer.from(open(text, context), 'base64') : stored
    }
  }
}

/** What a sealed value is bound to (authenticated data): the row it belongs to. */
export const secretContext = {
  service: (serviceId: string) => `marketplace_services:${serviceId}`,
  signingKey: (name: string) => `signing_keys:${name}`,
  // A free target's secret is copied with its step (template to instance, template to copy): bound to the tenant and the URL it signs for.
  stepTarget: (tenantId: string, url: string) => `step_targets:${tenantId}:${url}`
}

/** No key: values are stored and read as they are, and a sealed one is refused with a clear message. */
export const PLAIN_SECRETS = createSecretBox()
