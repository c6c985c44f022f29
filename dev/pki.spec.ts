import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as sshpk from 'sshpk';
import { makePki, type ClientIdentity, type Pki } from './pki';

const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';

describe('makePki', () => {
  let dir: string;
  let pki: Pki;
  let ca: crypto.X509Certificate;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nixfleet-pki-'));
    pki = await makePki(path.join(dir, 'pki'));
    ca = cert(pki.caCertPath);
  });

  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('makes a CA that may sign certificates', () => {
    expect(ca.ca).toBe(true);
    expect(ca.checkIssued(ca)).toBe(true);
    const out = execFileSync('openssl', ['x509', '-in', pki.caCertPath, '-noout', '-ext', 'keyUsage,basicConstraints'], {
      encoding: 'utf8',
    });
    expect(out).toMatch(/CA:TRUE/);
    expect(out).toMatch(/Certificate Sign/);
  });

  it('makes a server cert for loopback names with serverAuth', () => {
    const server = cert(pki.serverCertPath);
    expect(server.checkIssued(ca)).toBe(true);
    expect(server.keyUsage).toEqual([SERVER_AUTH]);
    expect(server.checkHost('localhost')).toBe('localhost');
    expect(server.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(server.checkIP('::1')).toBe('::1');
    expect(server.checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(pki.serverKeyPath)))).toBe(true);
  });

  it('issues client certs with clientAuth and the expected CNs, each matching its PEM key', () => {
    const pemIdentities: [ClientIdentity, string][] = [
      [pki.client, 'web-01'],
      [pki.clientCanonical, 'agent-web-01.fleet.test'],
      [pki.clientSec1, 'web-01'],
      [pki.clientPkcs1, 'web-01'],
      [pki.otherMachine, 'db-02'],
    ];
    for (const [id, cn] of pemIdentities) {
      const c = cert(id.certPath);
      expect(id.cn).toBe(cn);
      expect(c.subject).toBe(`CN=${cn}`);
      expect(c.checkIssued(ca)).toBe(true);
      expect(c.verify(ca.publicKey)).toBe(true);
      expect(c.keyUsage).toEqual([CLIENT_AUTH]);
      expect(c.checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(id.keyPath)))).toBe(true);
    }
  });

  it('writes every private key with mode 0600', () => {
    const keys = fs.readdirSync(pki.dir).filter((f) => f.endsWith('.key') || f.startsWith('ssh_host_'));
    expect(keys.length).toBeGreaterThanOrEqual(12);
    for (const f of keys) expect(fs.statSync(path.join(pki.dir, f)).mode & 0o777).toBe(0o600);
  });

  it('writes PKCS#8, SEC1 and PKCS#1 PEM keys with their own headers', () => {
    expect(firstLine(pki.client.keyPath)).toBe('-----BEGIN PRIVATE KEY-----');
    expect(firstLine(pki.clientSec1.keyPath)).toBe('-----BEGIN EC PRIVATE KEY-----');
    expect(firstLine(pki.clientPkcs1.keyPath)).toBe('-----BEGIN RSA PRIVATE KEY-----');
    const rsa = crypto.createPrivateKey(fs.readFileSync(pki.clientPkcs1.keyPath));
    expect(rsa.asymmetricKeyType).toBe('rsa');
    expect(rsa.asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(crypto.createPrivateKey(fs.readFileSync(pki.clientSec1.keyPath)).asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it('writes the ed25519 host key in OpenSSH format that ssh-keygen reads and the cert matches', () => {
    expect(firstLine(pki.clientOpensshEd25519.keyPath)).toBe('-----BEGIN OPENSSH PRIVATE KEY-----');
    const pub = execFileSync('ssh-keygen', ['-y', '-f', pki.clientOpensshEd25519.keyPath], { encoding: 'utf8' });
    expect(pub).toMatch(/^ssh-ed25519 AAAA/);
    const c = cert(pki.clientOpensshEd25519.certPath);
    expect(c.checkIssued(ca)).toBe(true);
    expect(c.keyUsage).toEqual([CLIENT_AUTH]);
    expect(c.publicKey.asymmetricKeyType).toBe('ed25519');
    const certPubSsh = sshpk.parseKey(c.publicKey.export({ type: 'spki', format: 'pem' }), 'pem').toString('ssh');
    expect(pub.split(' ').slice(0, 2).join(' ')).toBe(certPubSsh.split(' ').slice(0, 2).join(' '));
    // Node cannot read this format: the agent has to convert it.
    expect(() => crypto.createPrivateKey(fs.readFileSync(pki.clientOpensshEd25519.keyPath))).toThrow();
  });

  it('writes an OpenSSH RSA key that ssh-keygen reads as rsa', () => {
    expect(firstLine(pki.opensshRsaKeyPath)).toBe('-----BEGIN OPENSSH PRIVATE KEY-----');
    const pub = execFileSync('ssh-keygen', ['-y', '-f', pki.opensshRsaKeyPath], { encoding: 'utf8' });
    expect(pub).toMatch(/^ssh-rsa AAAA/);
  });

  it('writes a mismatched key that is valid but does not belong to the client cert', () => {
    const key = crypto.createPrivateKey(fs.readFileSync(pki.mismatchedKeyPath));
    expect(firstLine(pki.mismatchedKeyPath)).toBe('-----BEGIN PRIVATE KEY-----');
    expect(key.asymmetricKeyType).toBe('ec');
    expect(cert(pki.client.certPath).checkPrivateKey(key)).toBe(false);
  });

  it('signs the foreign identity with a CA the fleet CA does not vouch for', () => {
    const foreign = cert(pki.foreign.certPath);
    const foreignCa = cert(pki.foreignCaCertPath);
    expect(foreign.subject).toBe('CN=web-01');
    expect(foreign.checkIssued(ca)).toBe(false);
    expect(foreign.verify(ca.publicKey)).toBe(false);
    expect(foreign.verify(foreignCa.publicKey)).toBe(true);
    expect(foreignCa.fingerprint256).not.toBe(ca.fingerprint256);
  });

  it('issues extra client certs with chosen validity and key type', async () => {
    const expired = await pki.issueClient({
      cn: 'web-01',
      notBefore: new Date('2020-01-01T00:00:00Z'),
      notAfter: new Date('2020-02-01T00:00:00Z'),
      name: 'expired',
    });
    expect(expired.certPath).toBe(path.join(pki.dir, 'expired.crt'));
    expect(new Date(cert(expired.certPath).validTo).getTime()).toBe(Date.parse('2020-02-01T00:00:00Z'));

    const ed = await pki.issueClient({ cn: 'agent-web-01.fleet.test', keyType: 'ed25519' });
    const edCert = cert(ed.certPath);
    expect(edCert.publicKey.asymmetricKeyType).toBe('ed25519');
    expect(edCert.checkIssued(ca)).toBe(true);
    expect(edCert.checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(ed.keyPath)))).toBe(true);

    const again = await pki.issueClient({ cn: 'agent-web-01.fleet.test' });
    expect(again.certPath).not.toBe(ed.certPath);
  });

  it('is quick enough to make per suite', async () => {
    const started = performance.now();
    await makePki(path.join(dir, 'again'), { machineId: 'cache-07' }).then((p) => {
      expect(cert(p.client.certPath).subject).toBe('CN=cache-07');
      expect(p.clientCanonical.cn).toBe('agent-cache-07.fleet.test');
    });
    expect(performance.now() - started).toBeLessThan(2000);
  });
});

function cert(file: string): crypto.X509Certificate {
  return new crypto.X509Certificate(fs.readFileSync(file));
}

function firstLine(file: string): string {
  return fs.readFileSync(file, 'utf8').split('\n')[0];
}
