import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type * as SshPk from 'sshpk';
import { errnoText } from '../common/errno';
import { settingProblem } from '../config/config.messages';

/** What the agent presents and trusts on every control-plane connection. */
export interface TlsIdentity {
  /** CA bundle PEM; undefined means the system's CAs. */
  readonly ca?: string;
  readonly client?: {
    readonly certPem: string;
    /** Always PKCS#8 PEM: OpenSSH keys are converted in memory. */
    readonly keyPem: string;
    readonly keyType: string;
    readonly cn: string;
    readonly machineId: string;
    readonly notBefore: Date;
    readonly notAfter: Date;
    readonly fingerprint256: string;
  };
}

export interface IdentityPaths {
  machineId: string;
  caCert?: string;
  clientCert?: string;
  clientKey?: string;
}

export interface IdentityProblem {
  key: 'machineId' | 'caCert' | 'clientCert' | 'clientKey';
  /** The problem without the setting prefix, e.g. for a reload refusal that is not a config error. */
  what: string;
}

/** A start-stopping problem with the TLS identity; `lines` go to stderr one per problem. */
export class IdentityError extends Error {
  readonly lines: string[];

  constructor(readonly problems: readonly IdentityProblem[]) {
    const lines = problems.map((p) => settingProblem(p.key, p.what));
    super(lines.join('\n'));
    this.lines = lines;
    this.name = 'IdentityError';
  }
}

/**
 * The CP reads the machine id from the certificate's CN, bare or in the
 * canonical `agent-<machineId>.<suffix>` form (PROTOCOL §1).
 */
export function machineIdFromCn(cn: string): string {
  const canonical = /^agent-([^.]+)\.(.+)$/.exec(cn);
  return canonical?.[1] ?? cn;
}

/**
 * Validity dates are not checked here: an expired or not-yet-valid
 * certificate is no config error (a renewal may be on its way, or this host's
 * clock may be wrong); the identity watcher says so plainly instead.
 */
export function loadIdentity(paths: IdentityPaths): TlsIdentity {
  const problems: IdentityProblem[] = [];
  let ca: string | undefined;
  if (paths.caCert !== undefined) {
    ca = readText('caCert', paths.caCert, problems);
    if (ca !== undefined && !/-----BEGIN CERTIFICATE-----/.test(ca)) {
      problems.push(problem('caCert', `${paths.caCert} holds no PEM certificate`));
      ca = undefined;
    } else if (ca !== undefined) {
      try {
        new X509Certificate(ca);
      } catch (err) {
        problems.push(problem('caCert', `${paths.caCert} is not a readable PEM certificate bundle: ${(err as Error).message}`));
      }
    }
  }
  if (paths.clientCert === undefined || paths.clientKey === undefined) {
    if (problems.length > 0) throw new IdentityError(problems);
    return { ca };
  }

  const certPem = readText('clientCert', paths.clientCert, problems);
  const keyText = readText('clientKey', paths.clientKey, problems);
  let cert: X509Certificate | undefined;
  if (certPem !== undefined) {
    try {
      cert = new X509Certificate(certPem);
    } catch (err) {
      problems.push(problem('clientCert', `${paths.clientCert} is not a PEM certificate: ${(err as Error).message}`));
    }
  }
  const key = keyText === undefined ? undefined : parseClientKey(paths.clientKey, keyText, problems);

  if (cert && key && !cert.checkPrivateKey(key.object)) {
    problems.push(
      problem(
        'clientKey',
        `${paths.clientKey} (${key.type} key) does not belong to the certificate ${paths.clientCert}; give the key the certificate was issued for`,
      ),
    );
  }
  const cn = cert ? commonName(cert) : undefined;
  if (cert && cn === undefined) {
    problems.push(problem('clientCert', `${paths.clientCert} has no subject CN; the control plane takes the machine id from it`));
  }
  if (cn !== undefined && machineIdFromCn(cn) !== paths.machineId) {
    problems.push(
      problem(
        'machineId',
        `"${paths.machineId}" does not match the client certificate ${paths.clientCert} (CN "${cn}" names machine "${machineIdFromCn(cn)}"); the control plane would answer 403`,
      ),
    );
  }
  if (problems.length > 0 || !cert || !key || cn === undefined || certPem === undefined) throw new IdentityError(problems);

  return {
    ca,
    client: {
      certPem,
      keyPem: key.object.export({ type: 'pkcs8', format: 'pem' }).toString(),
      keyType: key.type,
      cn,
      machineId: machineIdFromCn(cn),
      notBefore: new Date(cert.validFrom),
      notAfter: new Date(cert.validTo),
      fingerprint256: cert.fingerprint256,
    },
  };
}

function problem(key: IdentityProblem['key'], what: string): IdentityProblem {
  return { key, what };
}

function readText(key: 'caCert' | 'clientCert' | 'clientKey', path: string, problems: IdentityProblem[]): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    problems.push(problem(key, `cannot read ${path}: ${errnoText(err)}`));
    return undefined;
  }
}

const OPENSSH_HEADER = '-----BEGIN OPENSSH PRIVATE KEY-----';

function parseClientKey(path: string, text: string, problems: IdentityProblem[]): { object: KeyObject; type: string } | undefined {
  if (text.includes(OPENSSH_HEADER)) return parseOpenSshKey(path, text, problems);
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(text)) {
    problems.push(problem('clientKey', `${path} is an encrypted PEM key; the agent runs unattended and needs an unencrypted key`));
    return undefined;
  }
  try {
    const object = createPrivateKey({ key: text, format: 'pem' });
    return { object, type: object.asymmetricKeyType ?? 'unknown' };
  } catch (err) {
    problems.push(
      problem(
        'clientKey',
        `${path} is not a PEM private key (PKCS#8, SEC1 or PKCS#1) nor an OpenSSH ed25519 key: ${(err as Error).message}`,
      ),
    );
    return undefined;
  }
}

/**
 * TLS stacks cannot read the OpenSSH container (PROTOCOL §1): take the
 * ed25519 seed out with sshpk and rebuild the key through JWK, the form
 * Node accepts (sshpk's own PKCS#8 output is rejected by Node 20).
 */
function parseOpenSshKey(path: string, text: string, problems: IdentityProblem[]): { object: KeyObject; type: string } | undefined {
  // Loaded here, for an OpenSSH key only: sshpk and its crypto libraries are ~1.4 MB of heap that a PEM key never needs.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const sshpk = require('sshpk') as typeof SshPk;
  let parsed: SshPk.PrivateKey;
  try {
    parsed = sshpk.parsePrivateKey(text, 'ssh-private');
  } catch (err) {
    const encrypted = (err as Error).name === 'KeyEncryptedError';
    problems.push(
      problem(
        'clientKey',
        encrypted
          ? `${path} is a passphrase-protected OpenSSH key; the agent runs unattended and needs an unencrypted key`
          : `${path} looks like an OpenSSH key but cannot be read: ${(err as Error).message}`,
      ),
    );
    return undefined;
  }
  if (parsed.type !== 'ed25519') {
    problems.push(
      problem(
        'clientKey',
        `${path} is an OpenSSH ${parsed.type} key; only ed25519 keys are read in OpenSSH format, so give the host's ed25519 key or a PEM key (PKCS#8, SEC1, PKCS#1)`,
      ),
    );
    return undefined;
  }
  const seed = partData(parsed, 'k');
  const pub = partData(parsed, 'A');
  if (!seed || !pub || seed.length < 32 || pub.length !== 32) {
    problems.push(problem('clientKey', `${path} is an OpenSSH ed25519 key with malformed key material`));
    return undefined;
  }
  // The OpenSSH container stores seed || public key; the JWK wants the 32-byte seed.
  const d = seed.subarray(0, 32);
  const object = createPrivateKey({
    key: { kty: 'OKP', crv: 'Ed25519', d: d.toString('base64url'), x: pub.toString('base64url') },
    format: 'jwk',
  });
  return { object, type: 'ed25519 (OpenSSH)' };
}

function partData(key: SshPk.PrivateKey, name: string): Buffer | undefined {
  const parts = key.part as unknown as Record<string, { data: Buffer } | undefined>;
  return parts[name]?.data;
}

function commonName(cert: X509Certificate): string | undefined {
  for (const line of cert.subject.split('\n')) {
    if (line.startsWith('CN=')) return line.slice(3);
  }
  return undefined;
}
