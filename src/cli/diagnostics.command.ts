import { randomBytes, X509Certificate } from 'node:crypto';
import {
  closeSync,
  lstatSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  type Stats,
  statSync,
  writeFileSync,
} from 'node:fs';
import { arch, hostname, platform, release, type as osType, version as osVersion } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack as tarPack } from 'tar-stream';
import { errnoText } from '../common/errno';
import type { SettingsSeen } from '../config/config.loader';
import { formatListenAddress, type ListenAddress } from '../config/listen-address';
import type { SettingKey } from '../config/settings';
import { PEM_BLOCK } from '../common/pem';
import { type EventLogSnapshot, readEventLog } from '../outbound/event-log.reader';
import { AGENT_VERSION } from '../version';
import type { ConfigDocument } from './config.command';
import { type AdminAnswer, getFromAdmin, getTextFromAdmin } from './admin-request';

/** Exit statuses of `nixfleet-agent diagnostics` (2, bad flags, is main's). */
export const DIAGNOSTICS_EXIT = { written: 0, notWritten: 1 } as const;
export type DiagnosticsExit = (typeof DIAGNOSTICS_EXIT)[keyof typeof DIAGNOSTICS_EXIT];

export interface DiagnosticsOptions {
  readonly adminAddress: ListenAddress;
  readonly stateDir: string;
  /** `-o FILE`; null: a name of its own in the working directory. */
  readonly output: string | null;
  readonly settings: SettingsSeen;
}

export interface DiagnosticsIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

export interface DiagnosticsDeps {
  now?: () => Date;
  cwd?: string;
}

/** One file of the archive, before redaction. */
export interface ArchiveFile {
  readonly name: string;
  readonly text: string;
}

/**
 * Writes one .tar.gz an operator attaches to a bug report: the agent's
 * /status and /metrics (or why it did not answer), the settings and where
 * each came from, summaries of the certificates, a summary of the event log,
 * and versions. No key material: the key file is never opened as such (its
 * stat(2) is all that is recorded; a key bundled into a certificate file is
 * read with that file), a certificate file is parsed for its certificates
 * only, and every file passes `redact` on its way in.
 */
export async function runDiagnosticsCommand(
  options: DiagnosticsOptions,
  io: DiagnosticsIo,
  deps: DiagnosticsDeps = {},
): Promise<DiagnosticsExit> {
  const now = (deps.now ?? (() => new Date()))();
  const base = archiveBaseName(hostOf(options.settings), now);
  const path = resolve(deps.cwd ?? process.cwd(), options.output ?? `${base}.tar.gz`);
  const { files, agentProblem } = await collect(options, now);
  let archive: Buffer;
  try {
    archive = await buildArchive(base, files, now);
  } catch (err) {
    io.err(`nixfleet-agent diagnostics: cannot build the archive: ${(err as Error).message}`);
    return DIAGNOSTICS_EXIT.notWritten;
  }
  try {
    writeArchive(path, archive);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    io.err(
      `nixfleet-agent diagnostics: cannot write ${path} (${code === undefined ? '' : `${code}, `}${errnoText(err)}); give another place with -o FILE`,
    );
    return DIAGNOSTICS_EXIT.notWritten;
  }
  if (agentProblem !== null) io.err(`nixfleet-agent diagnostics: ${agentProblem}; the archive says so and holds the rest`);
  io.out(path);
  return DIAGNOSTICS_EXIT.written;
}

/**
 * A bug report is still about this host: readable by its writer only until
 * they choose to share it. Writing in place would follow a symlink planted at
 * `path` (root running `-o /tmp/x` writes where the link points) and keep an
 * existing file's mode (a 0644 file stays 0644); so the archive goes to a new
 * file beside it, created exclusively (O_EXCL: never through a link) with
 * mode 0600, and is renamed over `path`, which replaces a link or a file
 * rather than writing into it. A failure leaves no temporary file behind.
 */
export function writeArchive(path: string, archive: Buffer): void {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  // Only a file this call created is removed on failure: 'wx' refusing a name means it is someone else's.
  const fd = openSync(temp, 'wx', 0o600);
  try {
    try {
      writeFileSync(fd, archive);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, path);
  } catch (err) {
    rmSync(temp, { force: true });
    throw err;
  }
}

/** `nixfleet-agent-diagnostics-web-01-20261203T071500Z`: no characters a file name or a mail client minds. */
export function archiveBaseName(host: string, at: Date): string {
  const stamp = at
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/[-:]/g, '');
  return `nixfleet-agent-diagnostics-${host.replace(/[^A-Za-z0-9._-]/g, '_')}-${stamp}`;
}

function hostOf(settings: SettingsSeen): string {
  const id = settings.effective.settings.machineId.value;
  return typeof id === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/.test(id) ? id : hostname();
}

/**
 * PEM blocks (keys, certificates, anything armoured) become `[LABEL redacted]`,
 * the logger's rule, and long base64 runs `[base64 redacted]`; then anything
 * still shaped like the start of a PEM block (a lower-case or damaged label
 * the rule does not match) is cut to the end.
 */
export function redact(text: string): string {
  const blocks = text.replace(PEM_BLOCK, (_block, label: string) => `[${label} redacted]`).replace(BASE64_RUN, '[base64 redacted]');
  const rest = blocks.search(/-----\s*BEGIN/i);
  return rest === -1 ? blocks : `${blocks.slice(0, rest)}[redacted to the end: something shaped like a PEM block]`;
}

/** A key's body without its armour (a DER key pasted as base64): nothing the agent reports is that long without a "-", "." or ":". */
const BASE64_RUN = /[A-Za-z0-9+/]{80,}={0,2}/g;

/** A gzip'd tar of `files` under `<base>/`, each redacted, mode 0600. */
export async function buildArchive(base: string, files: readonly ArchiveFile[], at: Date): Promise<Buffer> {
  const tar = tarPack();
  for (const f of files) tar.entry({ name: `${base}/${f.name}`, mode: 0o600, mtime: at }, redact(f.text));
  tar.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of tar) chunks.push(Buffer.from(chunk as Uint8Array));
  return gzipSync(Buffer.concat(chunks));
}

async function collect(o: DiagnosticsOptions, now: Date): Promise<{ files: ArchiveFile[]; agentProblem: string | null }> {
  const files: ArchiveFile[] = [];
  const json = (name: string, value: unknown): void => void files.push({ name, text: `${JSON.stringify(value, null, 2)}\n` });
  const where = formatListenAddress(o.adminAddress);

  const [status, metrics] = await Promise.allSettled([
    getFromAdmin(o.adminAddress, '/status'),
    getTextFromAdmin(o.adminAddress, '/metrics'),
  ]);
  const agent = agentAnswer(where, status, metrics);
  if (status.status === 'fulfilled') json('status.json', status.value.body);
  if (metrics.status === 'fulfilled') files.push({ name: 'metrics.txt', text: metrics.value.text });
  json('config.json', configSummary(o.settings));
  json('certificates.json', certificateSummary(o.settings, now));
  json('event-log.json', await eventLogSummary(o.stateDir));
  json('versions.json', versions());
  const summary = {
    createdAt: now.toISOString(),
    createdBy: `nixfleet-agent ${AGENT_VERSION} diagnostics`,
    agent,
    files: ['summary.json', ...files.map((f) => f.name)],
    notIncluded:
      'private keys: the client key file is never opened as such (only its stat; if it is also a certificate file, it is read as one); certificate files are parsed for their certificates only, other blocks named by label; every file is stripped of PEM blocks',
  };
  files.unshift({ name: 'summary.json', text: `${JSON.stringify(summary, null, 2)}\n` });
  return { files, agentProblem: agent.reachable ? null : `no agent answered at ${where} (${agent.error})` };
}

function agentAnswer(
  where: string,
  status: PromiseSettledResult<AdminAnswer>,
  metrics: PromiseSettledResult<{ status: number; text: string }>,
): { address: string; reachable: boolean; error: string | null; statusHttp: number | null; metricsHttp: number | null } {
  const error =
    status.status === 'rejected'
      ? errorText(status.reason)
      : metrics.status === 'rejected'
        ? `/metrics: ${errorText(metrics.reason)}`
        : null;
  return {
    address: where,
    reachable: status.status === 'fulfilled',
    error,
    statusHttp: status.status === 'fulfilled' ? status.value.status : null,
    metricsHttp: metrics.status === 'fulfilled' ? metrics.value.status : null,
  };
}

/** What `nixfleet-agent config --json` prints: every setting, its value and source, redacted; and what `run` would refuse in them. */
export function configSummary(s: SettingsSeen): ConfigDocument {
  return { ...s.effective, problems: [...s.problems] };
}

interface CertSummary {
  subject: string;
  issuer: string;
  serialNumber: string;
  notBefore: string;
  notAfter: string;
  daysLeft: number;
  fingerprintSha256: string;
  publicKey: string;
  subjectAltName: string | null;
  isCa: boolean;
}

/** Subject, issuer, validity and fingerprints of the CA bundle and the client certificate; of the key file its stat only. */
export function certificateSummary(s: SettingsSeen, now: Date): unknown {
  const path = (key: SettingKey & ('caCert' | 'clientCert' | 'clientKey')): string | null => {
    const v = s.effective.settings[key].value;
    return typeof v === 'string' && v !== '' ? v : null;
  };
  const caCert = path('caCert');
  const clientCert = path('clientCert');
  const clientKey = path('clientKey');
  const client = clientCert === null ? null : certFile(clientCert, now);
  return {
    caCert: caCert === null ? { path: null, note: 'not set: the system CAs verify the control plane' } : certFile(caCert, now),
    clientCert: clientCert === null ? { path: null, note: 'not set: no client certificate' } : client,
    clientKey:
      clientKey === null
        ? { path: null }
        : {
            path: clientKey,
            file: fileStat(clientKey),
            note: `${keyFileNote(clientKey, { clientCert, caCert })}; its type is the client certificate's public key's${client?.certificates[0] ? ` (${client.certificates[0].publicKey})` : ''}`,
          },
  };
}

/**
 * The key file is only stat(2)'d, unless it is also a certificate setting's
 * file (one PEM bundle for both): that file is read as a certificate file,
 * and the note says so rather than claim it was never opened.
 */
function keyFileNote(key: string, certs: Partial<Record<'clientCert' | 'caCert', string | null>>): string {
  const also = Object.entries(certs).find(([, cert]) => cert !== null && cert !== undefined && sameFile(key, cert));
  return also === undefined
    ? 'never opened by diagnostics'
    : `the same file as ${also[0]}: read as that, for its certificates only, its other blocks named by label, never copied`;
}

/** The same file, judged by stat(2) (which follows links and opens nothing); a path that cannot be stat'd by its text. */
function sameFile(a: string, b: string): boolean {
  try {
    const [x, y] = [statSync(a), statSync(b)];
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return resolve(a) === resolve(b);
  }
}

function certFile(
  path: string,
  now: Date,
): { path: string; file: unknown; certificates: CertSummary[]; otherBlocks: string[]; error: string | null } {
  const file = fileStat(path);
  let text: string;
  try {
    text = readFileSync(path, 'latin1');
  } catch (err) {
    return { path, file, certificates: [], otherBlocks: [], error: `cannot read: ${errnoText(err)}` };
  }
  const certificates: CertSummary[] = [];
  const otherBlocks: string[] = [];
  let error: string | null = null;
  // Labels only of the other blocks: a file that bundles the key with the certificate must not bring it along.
  for (const m of text.matchAll(new RegExp(PEM_BLOCK.source, 'g'))) {
    if (m[1] !== 'CERTIFICATE') {
      otherBlocks.push(m[1]);
      continue;
    }
    try {
      certificates.push(certSummary(new X509Certificate(m[0]), now));
    } catch (err) {
      error = `a CERTIFICATE block does not parse: ${(err as Error).message}`;
    }
  }
  if (certificates.length === 0 && error === null) error = 'holds no PEM certificate';
  return { path, file, certificates, otherBlocks, error };
}

function certSummary(c: X509Certificate, now: Date): CertSummary {
  const notAfter = new Date(c.validTo);
  const key = c.publicKey;
  const details = key.asymmetricKeyDetails;
  const size = details?.namedCurve ?? (details?.modulusLength === undefined ? null : `${details.modulusLength} bits`);
  return {
    subject: c.subject.replace(/\n/g, ', '),
    issuer: c.issuer.replace(/\n/g, ', '),
    serialNumber: c.serialNumber,
    notBefore: isoOr(c.validFrom),
    notAfter: isoOr(c.validTo),
    daysLeft: Math.floor((notAfter.getTime() - now.getTime()) / 86_400_000),
    fingerprintSha256: c.fingerprint256,
    publicKey: `${key.asymmetricKeyType ?? 'unknown'}${size === null ? '' : ` ${size}`}`,
    subjectAltName: c.subjectAltName ?? null,
    isCa: c.ca,
  };
}

/** lstat(2): what an operator checks first (a key readable by others, a dangling link); the file is not opened. */
function fileStat(path: string): unknown {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (err) {
    return { error: errnoText(err) };
  }
  return {
    type: st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : st.isDirectory() ? 'directory' : 'other',
    mode: `0${(st.mode & 0o7777).toString(8)}`,
    uid: st.uid,
    gid: st.gid,
    bytes: st.size,
    modifiedAt: st.mtime.toISOString(),
  };
}

/** Counts only: event bodies stay on the host (`nixfleet-agent events` shows them). */
export async function eventLogSummary(stateDir: string): Promise<unknown> {
  const dir = { path: stateDir, file: fileStat(stateDir), entries: stateDirEntries(stateDir) };
  let snapshot: EventLogSnapshot;
  try {
    snapshot = await readEventLog(stateDir);
  } catch (err) {
    return { stateDir: dir, error: `cannot read the event log: ${errnoText(err)}` };
  }
  const rollouts = snapshot.rollouts.map((r) => {
    const counts = { pending: 0, delivered: 0, refused: 0 };
    for (const ev of snapshot.events) if (ev.rolloutId === r.rolloutId) counts[ev.delivery.state] += 1;
    return {
      rolloutId: r.rolloutId,
      ...counts,
      lastSeq: r.lastSeq,
      lastDeliveredSeq: r.lastDeliveredSeq,
      notRetained: r.notRetained.length,
    };
  });
  return {
    stateDir: dir,
    path: snapshot.path,
    bytes: snapshot.bytes,
    events: snapshot.events.length,
    rollouts,
    incompleteTailBytes: snapshot.incompleteTailBytes,
    damagedRecords: snapshot.damaged,
  };
}

/** Names, sizes and modes; no contents. */
function stateDirEntries(dir: string): unknown {
  try {
    return readdirSync(dir)
      .sort()
      .map((name) => ({ name, ...(fileStat(join(dir, name)) as object) }));
  } catch (err) {
    return { error: errnoText(err) };
  }
}

export function versions(): unknown {
  return {
    agent: AGENT_VERSION,
    node: process.versions.node,
    openssl: process.versions.openssl,
    nest: packageVersion('@nestjs/core'),
    os: { platform: platform(), type: osType(), release: release(), version: osVersion(), arch: arch(), distribution: osRelease() },
  };
}

function packageVersion(name: string): string | null {
  try {
    return (JSON.parse(readFileSync(require.resolve(`${name}/package.json`), 'utf8')) as { version?: string }).version ?? null;
  } catch {
    return null;
  }
}

/** PRETTY_NAME of os-release(5), when there is one. */
function osRelease(): string | null {
  try {
    const m = /^PRETTY_NAME=(?:"([^"]*)"|(.*))$/m.exec(readFileSync('/etc/os-release', 'utf8'));
    return m ? (m[1] ?? m[2]) : null;
  } catch {
    return null;
  }
}

function isoOr(text: string): string {
  const at = Date.parse(text);
  return Number.isNaN(at) ? text : new Date(at).toISOString();
}

/** A refused connect to "localhost" is an AggregateError with no message of its own: its code says it. */
function errorText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.message ? e.message : (e.code ?? String(err));
}
