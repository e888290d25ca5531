import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Test } from 'tap'

export interface KeyPair {
  key: Buffer
  cert: Buffer
}

/**
 * Certificates made for one test file with the `openssl` command, in a folder removed at its end (no
 * private key is ever committed): a CA of its own (`ca`, and its file, `caFile`, for NODE_EXTRA_CA_CERTS)
 * and leaves it issued, and one self-signed leaf.
 */
export interface TestCertificates {
  ca: Buffer
  caFile: string
  /** Issued by the CA for localhost and 127.0.0.1, valid until 2099. */
  good: KeyPair
  /** Issued by the CA for localhost and 127.0.0.1, expired in 2020. */
  expired: KeyPair
  /** Issued by the CA for other.example only. */
  otherName: KeyPair
  /** Issued by the CA for the name localhost only, without the address 127.0.0.1. */
  byName: KeyPair
  /** Self-signed, for localhost and 127.0.0.1. */
  selfSigned: KeyPair
}

const run = promisify(execFile)

const CA_CONFIG = `[ca]
default_ca = local
[local]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[any]
commonName = supplied
`

/** EC keys: made in milliseconds. */
const KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']

export async function makeCertificates(t: Test): Promise<TestCertificates> {
  const dir = await mkdtemp(join(tmpdir(), 'baton-tls-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const openssl = (...args: string[]) => run('openssl', args, { cwd: dir })
  await writeFile(join(dir, 'ca.cnf'), CA_CONFIG)
  await writeFile(join(dir, 'index.txt'), '')
  await writeFile(join(dir, 'serial'), '01\n')
  await openssl('req', '-x509', ...KEY, '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/CN=Baton test CA', '-days', '2',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign')
  // `openssl ca` sets the dates, so an expired certificate needs no clock of its own; one at a time, as they share its index.
  const issue = async (name: string, names: string, from: string, until: string) => {
    await openssl('req', '-new', ...KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`, '-addext', `subjectAltName=${names}`)
    await openssl('ca', '-batch', '-config', 'ca.cnf', '-cert', 'ca.pem', '-keyfile', 'ca.key', '-in', `${name}.csr`, '-out', `${name}.pem`,
      '-startdate', from, '-enddate', until, '-notext')
  }
  const BOTH = 'DNS:localhost,IP:127.0.0.1'
  await issue('good', BOTH, '20200101000000Z', '20991231000000Z')
  await issue('expired', BOTH, '20200101000000Z', '20200201000000Z')
  await issue('other', 'DNS:other.example', '20200101000000Z', '20991231000000Z')
  await issue('byname', 'DNS:localhost', '20200101000000Z', '20991231000000Z')
  await openssl('req', '-x509', ...KEY, '-keyout', 'self.key', '-out', 'self.pem', '-subj', '/CN=localhost', '-days', '2', '-addext', `subjectAltName=${BOTH}`)
  const pair = async (name: string): Promise<KeyPair> => ({ key: await readFile(join(dir, `${name}.key`)), cert: await readFile(join(dir, `${name}.pem`)) })
  return {
    ca: await readFile(join(dir, 'ca.pem')),
    caFile: join(dir, 'ca.pem'),
    good: await pair('good'),
    expired: await pair('expired'),
    otherName: await pair('other'),
    byName: await pair('byname'),
    selfSigned: await pair('self')
  }
}
