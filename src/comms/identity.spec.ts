import { createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePki, type Pki } from '../../dev/pki';
import { IdentityError, loadIdentity, machineIdFromCn } from './identity';

describe('loadIdentity', () => {
  let dir: string;
  let pki: Pki;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-identity-'));
    pki = await makePki(join(dir, 'pki'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function problemsOf(fn: () => unknown): string[] {
    try {
      fn();
    } catch (err) {
      if (err instanceof IdentityError) return err.lines;
      throw err;
    }
    throw new Error('expected an IdentityError');
  }

  it('converts an OpenSSH ed25519 host key to a PKCS#8 key that Node and the certificate accept', () => {
    const id = loadIdentity({
      machineId: pki.machineId,
      caCert: pki.caCertPath,
      clientCert: pki.clientOpensshEd25519.certPath,
      clientKey: pki.clientOpensshEd25519.keyPath,
    });
    expect(readFileSync(pki.clientOpensshEd25519.keyPath, 'utf8')).toContain('-----BEGIN OPENSSH PRIVATE KEY-----');
    expect(id.client?.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(createPrivateKey(id.client?.keyPem ?? '').asymmetricKeyType).toBe('ed25519');
    expect(id.client?.keyType).toBe('ed25519 (OpenSSH)');
    expect(id.client?.machineId).toBe(pki.machineId);
  });

  it('refuses an OpenSSH RSA key, naming the file and the key type', () => {
    const lines = problemsOf(() =>
      loadIdentity({ machineId: pki.machineId, clientCert: pki.client.certPath, clientKey: pki.opensshRsaKeyPath }),
    );
    expect(lines).toEqual([
      `config error: --client-key (env NIXFLEET_AGENT_CLIENT_KEY, file key "clientKey"): ${pki.opensshRsaKeyPath} is an OpenSSH rsa key; only ed25519 keys are read in OpenSSH format, so give the host's ed25519 key or a PEM key (PKCS#8, SEC1, PKCS#1)`,
    ]);
  });

  it('refuses a key that does not belong to the certificate', () => {
    const lines = problemsOf(() =>
      loadIdentity({ machineId: pki.machineId, clientCert: pki.client.certPath, clientKey: pki.mismatchedKeyPath }),
    );
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`${pki.mismatchedKeyPath} \\(ec key\\) does not belong to the certificate ${pki.client.certPath}`));
  });

  it('refuses a --machine-id that is not the certificate CN', () => {
    const lines = problemsOf(() =>
      loadIdentity({ machineId: 'web-01', clientCert: pki.otherMachine.certPath, clientKey: pki.otherMachine.keyPath }),
    );
    expect(lines).toEqual([
      `config error: --machine-id (env NIXFLEET_AGENT_MACHINE_ID, file key "machineId"): "web-01" does not match the client certificate ${pki.otherMachine.certPath} (CN "db-02" names machine "db-02"); the control plane would answer 403`,
    ]);
  });

  it('refuses a file that is no key at all and a CA file that holds no certificate', () => {
    const junk = join(dir, 'junk.pem');
    writeFileSync(junk, 'hello\n');
    const lines = problemsOf(() =>
      loadIdentity({ machineId: pki.machineId, caCert: junk, clientCert: pki.client.certPath, clientKey: junk }),
    );
    expect(lines[0]).toMatch(/--ca-cert .*junk.pem holds no PEM certificate/);
    expect(lines[1]).toMatch(/--client-key .*junk.pem is not a PEM private key \(PKCS#8, SEC1 or PKCS#1\) nor an OpenSSH ed25519 key/);
  });

  it('reads the machine id from a bare or canonical CN', () => {
    expect(machineIdFromCn('web-01')).toBe('web-01');
    expect(machineIdFromCn('agent-web-01.fleet.example')).toBe('web-01');
  });
});
