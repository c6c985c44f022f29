import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePki, type Pki } from '../../dev/pki';
import type { SettingsSeen } from '../config/config.loader';
import type { SettingKey } from '../config/settings';
import { effectiveSettings, type PickedSetting } from '../config/effective-settings';
import {
  archiveBaseName,
  buildArchive,
  certificateSummary,
  configSummary,
  DIAGNOSTICS_EXIT,
  redact,
  runDiagnosticsCommand,
} from './diagnostics.command';

const AT = new Date('2026-12-03T07:15:42.123Z');

function seen(values: Partial<Record<SettingKey, unknown>>, problems: string[] = []): SettingsSeen {
  const picked = new Map<SettingKey, PickedSetting>();
  for (const [key, value] of Object.entries(values)) picked.set(key as SettingKey, { value, source: 'flag' });
  return { effective: effectiveSettings(picked, null), problems };
}

/** The base64 body of a PEM file: the lines between its armour. */
function pemBody(path: string): string {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('-----'))
    .join('');
}

describe('nixfleet-agent diagnostics: redaction, naming, the archive', () => {
  let dir: string;
  let pki: Pki;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-diag-unit-'));
    pki = await makePki(join(dir, 'pki'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('redacts every PEM block, raw or JSON-escaped, PKCS#8, SEC1 and OpenSSH alike', () => {
    for (const keyPath of [pki.client.keyPath, pki.clientSec1.keyPath, pki.clientOpensshEd25519.keyPath]) {
      const key = readFileSync(keyPath, 'utf8');
      const label = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(key)![1];
      const raw = redact(`before ${key} after`);
      const escaped = redact(JSON.stringify({ clientKey: key }));

      expect(raw).toBe(`before [${label} redacted]\n after`);
      expect(escaped).toBe(`{"clientKey":"[${label} redacted]\\n"}`);
      for (const text of [raw, escaped]) expect(text).not.toContain(pemBody(keyPath).slice(0, 40));
    }
  });

  it('redacts a key body pasted without its armour, as one base64 run', () => {
    const body = pemBody(pki.client.keyPath);
    expect(redact(`clientKey=${body};`)).toBe('clientKey=[base64 redacted];');
    expect(redact('/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web-01-26.05')).toBe(
      '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web-01-26.05',
    );
  });

  it('cuts to the end what only looks like the start of a PEM block the rule does not match', () => {
    expect(redact('value: -----begin private key-----\nMIGHAgEAMBMG...')).toBe(
      'value: [redacted to the end: something shaped like a PEM block]',
    );
    expect(redact('no armour here')).toBe('no armour here');
  });

  it('names the archive after the host and the UTC time, with nothing a file name minds', () => {
    expect(archiveBaseName('web-01', AT)).toBe('nixfleet-agent-diagnostics-web-01-20261203T071542Z');
    expect(archiveBaseName('a b/c', AT)).toBe('nixfleet-agent-diagnostics-a_b_c-20261203T071542Z');
  });

  it('builds a .tar.gz that tar(1) lists and extracts: every file under one folder, mode 0600, redacted on the way in', async () => {
    const key = readFileSync(pki.client.keyPath, 'utf8');
    const archive = await buildArchive(
      'base',
      [
        { name: 'a.json', text: '{"a":1}\n' },
        { name: 'b.txt', text: `leaked? ${key}` },
      ],
      AT,
    );
    const tgz = join(dir, 'unit.tar.gz');
    writeFileSync(tgz, archive);

    const list = spawnSync('tar', ['-tvzf', tgz], { encoding: 'utf8' });
    expect(list.status).toBe(0);
    expect(
      list.stdout
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, 10), l.split(/\s+/).at(-1)]),
    ).toEqual([
      ['-rw-------', 'base/a.json'],
      ['-rw-------', 'base/b.txt'],
    ]);
    const out = join(dir, 'unit-x');
    mkdirSync(out);
    expect(spawnSync('tar', ['-xzf', tgz, '-C', out]).status).toBe(0);
    expect(readFileSync(join(out, 'base', 'a.json'), 'utf8')).toBe('{"a":1}\n');
    expect(readFileSync(join(out, 'base', 'b.txt'), 'utf8')).toBe('leaked? [PRIVATE KEY redacted]\n');
  });

  it('summarises the CA and client certificates, never opening the key; a key bundled into a cert file is named, not copied', () => {
    const bundled = join(dir, 'bundled.pem');
    writeFileSync(bundled, readFileSync(pki.client.certPath, 'utf8') + readFileSync(pki.client.keyPath, 'utf8'));
    const ca = new X509Certificate(readFileSync(pki.caCertPath));
    const client = new X509Certificate(readFileSync(pki.client.certPath));

    const summary = certificateSummary(seen({ caCert: pki.caCertPath, clientCert: bundled, clientKey: pki.client.keyPath }), AT) as {
      caCert: { certificates: { subject: string; isCa: boolean; fingerprintSha256: string }[] };
      clientCert: { certificates: Record<string, unknown>[]; otherBlocks: string[]; error: string | null };
      clientKey: { path: string; file: { type: string; mode: string; bytes: number }; note: string };
    };

    expect(summary.caCert.certificates).toEqual([
      expect.objectContaining({ subject: 'CN=nixfleet dev CA', isCa: true, fingerprintSha256: ca.fingerprint256 }),
    ]);
    expect(summary.clientCert).toMatchObject({ otherBlocks: ['PRIVATE KEY'], error: null });
    expect(summary.clientCert.certificates).toEqual([
      {
        subject: 'CN=web-01',
        issuer: 'CN=nixfleet dev CA',
        serialNumber: client.serialNumber,
        notBefore: new Date(client.validFrom).toISOString(),
        notAfter: new Date(client.validTo).toISOString(),
        daysLeft: Math.floor((Date.parse(client.validTo) - AT.getTime()) / 86_400_000),
        fingerprintSha256: client.fingerprint256,
        publicKey: 'ec prime256v1',
        subjectAltName: null,
        isCa: false,
      },
    ]);
    expect(summary.clientKey).toMatchObject({ path: pki.client.keyPath, file: { type: 'file', mode: '0600' } });
    expect(summary.clientKey.note).toBe("never opened by diagnostics; its type is the client certificate's public key's (ec prime256v1)");
    expect(JSON.stringify(summary)).not.toContain(pemBody(pki.client.keyPath).slice(0, 40));
  });

  it('says that a key bundled into the client certificate file is read with that file, not that it was never opened', () => {
    const bundled = join(dir, 'bundle-both.pem');
    writeFileSync(bundled, readFileSync(pki.client.certPath, 'utf8') + readFileSync(pki.client.keyPath, 'utf8'));
    const linked = join(dir, 'bundle-link.pem');
    symlinkSync(bundled, linked);

    for (const clientKey of [bundled, linked]) {
      const summary = certificateSummary(seen({ clientCert: bundled, clientKey }), AT) as {
        clientCert: { otherBlocks: string[] };
        clientKey: { note: string };
      };
      expect(summary.clientCert.otherBlocks).toEqual(['PRIVATE KEY']);
      expect(summary.clientKey.note).toBe(
        "the same file as clientCert: read as that, for its certificates only, its other blocks named by label, never copied; its type is the client certificate's public key's (ec prime256v1)",
      );
      expect(JSON.stringify(summary)).not.toContain(pemBody(pki.client.keyPath).slice(0, 40));
    }
  });

  it('puts the settings in as `config --json` prints them, with what run would refuse', () => {
    const problem =
      'config error: --control-plane-url (env NIXFLEET_AGENT_CONTROL_PLANE_URL, file key "controlPlaneUrl"): is required but was not set';
    const s = seen({ machineId: 'web-01', stateDir: '/srv/state' }, [problem]);

    expect(configSummary(s)).toEqual({ configFile: null, settings: s.effective.settings, problems: [problem] });
    expect(s.effective.settings).toMatchObject({
      machineId: { value: 'web-01', source: 'flag' },
      controlPlaneUrl: { value: null, source: 'unset' },
    });
  });
});

describe('nixfleet-agent diagnostics: writing the archive at -o FILE', () => {
  let dir: string;
  let n = 0;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-diag-write-'));
    mkdirSync(join(dir, 'state'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A run with no agent at its admin socket (it says so and writes the rest), writing to `output`. */
  async function diagnose(output: string): Promise<{ code: number; out: string[]; err: string[] }> {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runDiagnosticsCommand(
      {
        adminAddress: { kind: 'unix', path: join(dir, `no-agent-${++n}.sock`) },
        stateDir: join(dir, 'state'),
        output,
        settings: seen({ machineId: 'web-01' }),
      },
      { out: (t) => out.push(t), err: (t) => err.push(t) },
      { now: () => AT, cwd: dir },
    );
    return { code, out, err };
  }

  /** The archive's file names, as tar(1) lists them. */
  function listed(path: string): string[] {
    const list = spawnSync('tar', ['-tzf', path], { encoding: 'utf8' });
    expect(list.status).toBe(0);
    return list.stdout.trim().split('\n');
  }

  /** Files left in `dir` besides the ones named: a temporary file that outlived its write would show here. */
  const leftovers = (known: string[]): string[] => readdirSync(dir).filter((f) => !known.includes(f) && f !== 'state');

  it('replaces an existing 0644 file with the new archive, mode 0600', async () => {
    const path = join(dir, 'existing.tar.gz');
    writeFileSync(path, 'an old archive, readable by all');
    chmodSync(path, 0o644);

    const r = await diagnose(path);

    expect(r.code).toBe(DIAGNOSTICS_EXIT.written);
    expect(r.out).toEqual([path]);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(listed(path)).toContain('nixfleet-agent-diagnostics-web-01-20261203T071542Z/summary.json');
    expect(leftovers(['existing.tar.gz'])).toEqual([]);
    rmSync(path);
  });

  it('replaces a symlink at -o FILE with the archive instead of writing through it: the target is unchanged, a dangling one not created', async () => {
    const target = join(dir, 'target.txt');
    writeFileSync(target, 'not to be overwritten');
    chmodSync(target, 0o644);
    const link = join(dir, 'link.tar.gz');
    symlinkSync(target, link);
    const nowhere = join(dir, 'not-created.txt');
    const dangling = join(dir, 'dangling.tar.gz');
    symlinkSync(nowhere, dangling);

    for (const path of [link, dangling]) {
      const r = await diagnose(path);

      expect(r.code).toBe(DIAGNOSTICS_EXIT.written);
      expect(lstatSync(path).isFile()).toBe(true);
      expect(lstatSync(path).mode & 0o777).toBe(0o600);
      expect(listed(path)).toContain('nixfleet-agent-diagnostics-web-01-20261203T071542Z/certificates.json');
    }
    expect(readFileSync(target, 'utf8')).toBe('not to be overwritten');
    expect(statSync(target).mode & 0o777).toBe(0o644);
    expect(existsSync(nowhere)).toBe(false);
    expect(leftovers(['target.txt', 'link.tar.gz', 'dangling.tar.gz'])).toEqual([]);
    for (const f of ['target.txt', 'link.tar.gz', 'dangling.tar.gz']) rmSync(join(dir, f));
  });

  it('exits 1 with one line naming the path and errno when it cannot put the archive in place, leaving no temporary file', async () => {
    const folder = join(dir, 'a-folder');
    mkdirSync(folder);
    const link = join(dir, 'link-to-folder');
    symlinkSync(folder, link);

    const intoFolder = await diagnose(folder);
    const noDir = await diagnose(join(dir, 'no-such-dir', 'd.tar.gz'));

    expect(intoFolder.code).toBe(DIAGNOSTICS_EXIT.notWritten);
    expect(intoFolder.out).toEqual([]);
    expect(intoFolder.err).toContainEqual(
      `nixfleet-agent diagnostics: cannot write ${folder} (EISDIR, it is a directory); give another place with -o FILE`,
    );
    expect(noDir.code).toBe(DIAGNOSTICS_EXIT.notWritten);
    expect(noDir.err).toContainEqual(
      `nixfleet-agent diagnostics: cannot write ${join(dir, 'no-such-dir', 'd.tar.gz')} (ENOENT, no such file); give another place with -o FILE`,
    );
    expect(readdirSync(folder)).toEqual([]);
    expect(leftovers(['a-folder', 'link-to-folder'])).toEqual([]);
    // A symlink to a folder is replaced like any other link: the archive is written, nothing goes into the folder.
    const viaLink = await diagnose(link);
    expect(viaLink.code).toBe(DIAGNOSTICS_EXIT.written);
    expect(lstatSync(link).isFile()).toBe(true);
    expect(readdirSync(folder)).toEqual([]);
  });
});
