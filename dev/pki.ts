// @peculiar/x509 resolves its services through tsyringe, which needs the Reflect polyfill loaded first.
import 'reflect-metadata';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as x509 from '@peculiar/x509';
import * as sshpk from 'sshpk';

// x509 signs through WebCrypto; Node's implementation does P-256 and Ed25519 in process.
x509.cryptoProvider.set(crypto.webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const generateKeyPair = promisify(crypto.generateKeyPair);

export interface ClientIdentity {
  certPath: string;
  keyPath: string;
  cn: string;
}

export interface Pki {
  dir: string;
  /** The CA bundle the agent and the CP trust. */
  caCertPath: string;
  caKeyPath: string;
  /** SAN: DNS localhost, IP 127.0.0.1, IP ::1. */
  serverCertPath: string;
  serverKeyPath: string;
  machineId: string;
  /** CN = machineId, PKCS#8 P-256 key. */
  client: ClientIdentity;
  /** CN = `agent-<machineId>.fleet.test`. */
  clientCanonical: ClientIdentity;
  /** P-256 key written as SEC1 PEM. */
  clientSec1: ClientIdentity;
  /** RSA 2048 key written as PKCS#1 PEM. */
  clientPkcs1: ClientIdentity;
  /** Ed25519 key in OpenSSH format, unencrypted, as ssh-keygen writes host keys. */
  clientOpensshEd25519: ClientIdentity;
  /** An OpenSSH-format RSA private key: a type the agent must refuse. No cert. */
  opensshRsaKeyPath: string;
  /** A valid PKCS#8 key that does not belong to `client.certPath`. */
  mismatchedKeyPath: string;
  /** CN = 'db-02'. */
  otherMachine: ClientIdentity;
  /** CN = machineId, signed by a CA the CP does not trust. */
  foreign: ClientIdentity;
  /** The untrusted CA: an agent trusting only this must fail the handshake to the CP. */
  foreignCaCertPath: string;
  /** Issues a client cert from the trusted CA (expired, not yet valid, rotated, ...). */
  issueClient(opts: IssueClientOptions): Promise<ClientIdentity>;
}

export interface IssueClientOptions {
  cn: string;
  notBefore?: Date;
  notAfter?: Date;
  /** File stem inside `dir`; defaults to a unique name derived from the CN. */
  name?: string;
  keyType?: 'p256' | 'ed25519';
}

/** File names inside a PKI dir; the standalone CP reads the server's from here. */
export const PKI_FILES = {
  caCert: 'ca.crt',
  caKey: 'ca.key',
  serverCert: 'server.crt',
  serverKey: 'server.key',
} as const;

export const CANONICAL_SUFFIX = 'fleet.test';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const ECDSA_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;

interface Ca {
  cert: x509.X509Certificate;
  signingKey: crypto.webcrypto.CryptoKey;
}

/** Writes a fresh CA, server cert and the client identities the agent's tests need into `dir`. */
export async function makePki(dir: string, opts: { machineId?: string; serverNames?: string[] } = {}): Promise<Pki> {
  const machineId = opts.machineId ?? 'web-01';
  const serverNames = opts.serverNames ?? [];
  fs.mkdirSync(dir, { recursive: true });
  const file = (name: string): string => path.join(dir, name);

  // RSA keygen dominates; start it first so it runs on the thread pool meanwhile.
  const rsaPending = generateKeyPair('rsa', { modulusLength: 2048 });
  const [ca, foreignCa] = await Promise.all([
    makeCa(`nixfleet dev CA`, file(PKI_FILES.caCert), file(PKI_FILES.caKey)),
    makeCa(`foreign dev CA`, file('foreign-ca.crt'), file('foreign-ca.key')),
  ]);

  let issued = 0;
  const issueClient = async (o: IssueClientOptions): Promise<ClientIdentity> => {
    const name = o.name ?? `client-${slug(o.cn)}-${++issued}`;
    const keys = o.keyType === 'ed25519' ? await generateKeyPair('ed25519') : await generateKeyPair('ec', { namedCurve: 'P-256' });
    const certPath = file(`${name}.crt`);
    const keyPath = file(`${name}.key`);
    await writeLeaf(ca, keys.publicKey, { cn: o.cn, usage: 'client', notBefore: o.notBefore, notAfter: o.notAfter }, certPath);
    writeKey(keyPath, pem(keys.privateKey, 'pkcs8'));
    return { certPath, keyPath, cn: o.cn };
  };

  const withEcKey = async (issuer: Ca, name: string, cn: string, keyFormat: 'pkcs8' | 'sec1' = 'pkcs8'): Promise<ClientIdentity> => {
    const keys = await generateKeyPair('ec', { namedCurve: 'P-256' });
    const id = { certPath: file(`${name}.crt`), keyPath: file(`${name}.key`), cn };
    await writeLeaf(issuer, keys.publicKey, { cn, usage: 'client' }, id.certPath);
    writeKey(id.keyPath, pem(keys.privateKey, keyFormat));
    return id;
  };

  const server = async (): Promise<void> => {
    const keys = await generateKeyPair('ec', { namedCurve: 'P-256' });
    await writeLeaf(ca, keys.publicKey, { cn: 'localhost', usage: 'server', serverNames }, file(PKI_FILES.serverCert));
    writeKey(file(PKI_FILES.serverKey), pem(keys.privateKey, 'pkcs8'));
  };

  const opensshEd25519 = async (): Promise<ClientIdentity> => {
    const keys = await generateKeyPair('ed25519');
    const id = { certPath: file('client-openssh-ed25519.crt'), keyPath: file('ssh_host_ed25519_key'), cn: machineId };
    await writeLeaf(ca, keys.publicKey, { cn: machineId, usage: 'client' }, id.certPath);
    writeKey(id.keyPath, toOpenssh(keys.privateKey, `root@${machineId}`));
    return id;
  };

  const rsaClient = async (): Promise<{ id: ClientIdentity; opensshRsaKeyPath: string }> => {
    const keys = await rsaPending;
    const id = { certPath: file('client-pkcs1.crt'), keyPath: file('client-pkcs1.key'), cn: machineId };
    await writeLeaf(ca, keys.publicKey, { cn: machineId, usage: 'client' }, id.certPath);
    writeKey(id.keyPath, pem(keys.privateKey, 'pkcs1'));
    // The same RSA key serves both: only its OpenSSH encoding matters for the refusal.
    const opensshRsaKeyPath = file('ssh_host_rsa_key');
    writeKey(opensshRsaKeyPath, toOpenssh(keys.privateKey, `root@${machineId}`));
    return { id, opensshRsaKeyPath };
  };

  const mismatched = async (): Promise<string> => {
    const keys = await generateKeyPair('ec', { namedCurve: 'P-256' });
    const keyPath = file('mismatched.key');
    writeKey(keyPath, pem(keys.privateKey, 'pkcs8'));
    return keyPath;
  };

  const [, client, clientCanonical, clientSec1, otherMachine, foreign, clientOpensshEd25519, rsa, mismatchedKeyPath] = await Promise.all([
    server(),
    withEcKey(ca, 'client', machineId),
    withEcKey(ca, 'client-canonical', `agent-${machineId}.${CANONICAL_SUFFIX}`),
    withEcKey(ca, 'client-sec1', machineId, 'sec1'),
    withEcKey(ca, 'other-machine', 'db-02'),
    withEcKey(foreignCa, 'foreign', machineId),
    opensshEd25519(),
    rsaClient(),
    mismatched(),
  ]);

  return {
    dir,
    caCertPath: file(PKI_FILES.caCert),
    caKeyPath: file(PKI_FILES.caKey),
    serverCertPath: file(PKI_FILES.serverCert),
    serverKeyPath: file(PKI_FILES.serverKey),
    machineId,
    client,
    clientCanonical,
    clientSec1,
    clientPkcs1: rsa.id,
    clientOpensshEd25519,
    opensshRsaKeyPath: rsa.opensshRsaKeyPath,
    mismatchedKeyPath,
    otherMachine,
    foreign,
    foreignCaCertPath: file('foreign-ca.crt'),
    issueClient,
  };
}

/** `ca`/`cert`/`key` for `https.request` with a PEM identity (not the OpenSSH ones). */
export function clientTlsOptions(
  caCertPath: string,
  id: Pick<ClientIdentity, 'certPath' | 'keyPath'>,
): { ca: Buffer; cert: Buffer; key: Buffer } {
  return { ca: fs.readFileSync(caCertPath), cert: fs.readFileSync(id.certPath), key: fs.readFileSync(id.keyPath) };
}

async function makeCa(cn: string, certPath: string, keyPath: string): Promise<Ca> {
  const keys = await generateKeyPair('ec', { namedCurve: 'P-256' });
  const signingKey = await importSigningKey(keys.privateKey);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${cn}`,
    issuer: `CN=${cn}`,
    notBefore: new Date(now - HOUR_MS),
    notAfter: new Date(now + 3650 * DAY_MS),
    publicKey: spki(keys.publicKey),
    signingKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(spki(keys.publicKey)),
    ],
  });
  fs.writeFileSync(certPath, cert.toString('pem') + '\n');
  writeKey(keyPath, pem(keys.privateKey, 'pkcs8'));
  return { cert, signingKey };
}

async function writeLeaf(
  ca: Ca,
  publicKey: crypto.KeyObject,
  o: { cn: string; usage: 'client' | 'server'; notBefore?: Date; notAfter?: Date; serverNames?: string[] },
  certPath: string,
): Promise<void> {
  const now = Date.now();
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    // keyEncipherment too, so an RSA key can also serve TLS 1.2 RSA key exchange.
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
    new x509.ExtendedKeyUsageExtension([o.usage === 'client' ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth], false),
    await x509.AuthorityKeyIdentifierExtension.create(ca.cert.publicKey),
  ];
  if (o.usage === 'server') {
    extensions.push(
      new x509.SubjectAlternativeNameExtension([
        { type: 'dns', value: 'localhost' },
        { type: 'ip', value: '127.0.0.1' },
        { type: 'ip', value: '::1' },
        // Extra DNS names, e.g. the compose service name the agent dials.
        ...(o.serverNames ?? []).map((value) => ({ type: 'dns' as const, value })),
      ]),
    );
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${o.cn}`,
    issuer: ca.cert.subject,
    // An hour of slack: a host whose clock runs a little behind still accepts a fresh cert.
    notBefore: o.notBefore ?? new Date(now - HOUR_MS),
    notAfter: o.notAfter ?? new Date(now + 365 * DAY_MS),
    publicKey: spki(publicKey),
    signingKey: ca.signingKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions,
  });
  fs.writeFileSync(certPath, cert.toString('pem') + '\n');
}

function importSigningKey(key: crypto.KeyObject): Promise<crypto.webcrypto.CryptoKey> {
  const der = key.export({ type: 'pkcs8', format: 'der' });
  return crypto.webcrypto.subtle.importKey('pkcs8', der, ECDSA_P256, false, ['sign']);
}

function spki(key: crypto.KeyObject): ArrayBuffer {
  const der = key.export({ type: 'spki', format: 'der' });
  return der.buffer.slice(der.byteOffset, der.byteOffset + der.byteLength);
}

function pem(key: crypto.KeyObject, type: 'pkcs8' | 'sec1' | 'pkcs1'): string {
  return key.export({ type, format: 'pem' }) as string;
}

/** OpenSSH `-----BEGIN OPENSSH PRIVATE KEY-----`, unencrypted, the way ssh-keygen writes host keys. */
function toOpenssh(key: crypto.KeyObject, comment: string): string {
  const parsed = sshpk.parsePrivateKey(pem(key, 'pkcs8'), 'pem');
  parsed.comment = comment;
  return parsed.toString('ssh-private');
}

function writeKey(keyPath: string, text: string): void {
  // mode applies only on create; chmod covers a rewrite of an existing file.
  fs.writeFileSync(keyPath, text, { mode: 0o600 });
  fs.chmodSync(keyPath, 0o600);
}

/** A positive 16-byte serial: the top bit clear so DER does not read it as negative. */
function serial(): string {
  const bytes = crypto.randomBytes(16);
  bytes[0] = (bytes[0] & 0x7f) | 0x01;
  return bytes.toString('hex');
}

function slug(cn: string): string {
  return cn.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 60);
}
