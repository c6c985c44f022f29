import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { ManifestSigner } from '../dev/manifest-signer';
import { makePki } from '../dev/pki';
import { fileKeyOf, SETTING_SPECS } from '../src/config/settings';
import { AGENT_MAIN, cleanEnv } from './support/agent-process';

/*
 * nix/ holds a package and a NixOS module. No nixpkgs can be fetched here, so
 * they are never built or evaluated against it (README "NixOS"). What runs:
 * Debian's nix-instantiate (package nix-bin; .ci/run installs it) parses every
 * .nix file of the repository, evaluates nix/npm-lock.nix against the real
 * lockfile, and evaluates nix/module.nix against test/nix/stub-lib.nix, whose
 * unit is compared with deploy/systemd/nixfleet-agent.service key by key.
 */

const ROOT = resolve(__dirname, '..');
const UNIT_FILE = join(ROOT, 'deploy', 'systemd', 'nixfleet-agent.service');
const SKIP_DIRS = new Set(['node_modules', '.git', 'dist', 'dist-dev', 'dist-bench', 'coverage', '.demo']);

function nixInstantiate(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('nix-instantiate', args, { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    throw new Error('nix-instantiate is not installed: apt-get install nix-bin (as .ci/run does)');
  }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The module evaluated for a host's `services.nixfleet-agent` (test/nix/eval-module.nix), however it ends. */
function evalModuleRaw(hostJson: string): { status: number | null; stdout: string; stderr: string } {
  return nixInstantiate([
    '--eval',
    '--strict',
    '--json',
    '--readonly-mode',
    join('test', 'nix', 'eval-module.nix'),
    '--argstr',
    'hostJson',
    hostJson,
  ]);
}

/** `--eval --strict --json`, read-only: nothing is written to a Nix store. */
function evalJson(args: string[]): unknown {
  const r = nixInstantiate(['--eval', '--strict', '--json', '--readonly-mode', ...args]);
  if (r.status !== 0) throw new Error(`nix-instantiate ${args.join(' ')} failed (${r.status}):\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

function nixFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.isDirectory()) return SKIP_DIRS.has(e.name) ? [] : nixFiles(join(dir, e.name));
    return e.isFile() && e.name.endsWith('.nix') ? [join(dir, e.name)] : [];
  });
}

/** The unit file's sections, each key with its values in order (comments and blank lines dropped). */
function readUnit(text: string): Record<string, Record<string, string[]>> {
  const sections: Record<string, Record<string, string[]>> = {};
  let current: Record<string, string[]> | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      current = sections[section[1]] = {};
      continue;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!kv || !current) throw new Error(`cannot read unit line: ${line}`);
    (current[kv[1]] ??= []).push(kv[2]);
  }
  return sections;
}

/** A NixOS serviceConfig value as the line systemd would read (lists: one line each, joined here). */
function unitValue(value: unknown): string {
  if (Array.isArray(value)) return value.map(unitValue).join(' ');
  if (value === true) return 'yes';
  if (value === false) return 'no';
  return String(value);
}

/** The unit's values, with systemd's booleans spelled one way. */
function normalise(values: string[]): string {
  return values.map((v) => ({ true: 'yes', false: 'no' })[v] ?? v).join(' ');
}

/** utils.escapeSystemdExecArgs undone: the JSON-quoted words of an ExecStart line. */
function execWords(line: string): string[] {
  return [...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) =>
    (JSON.parse(`"${m[1]}"`) as string).replace(/%%/g, '%').replace(/\$\$/g, '$'),
  );
}

interface ModuleEval {
  active: boolean;
  description: string;
  wantedBy: string[];
  wants: string[];
  after: string[];
  serviceConfig: Record<string, unknown>;
  path: string[];
  restartTriggers: string[];
  nodejs: string;
  package: string;
  etc: Record<string, { path: string; text: string }>;
  systemPackages: string[];
}

/** `hostNix`: a Nix expression for top-level options JSON cannot carry (a path literal); they replace `host`'s. */
function evalModule(host: unknown, hostNix?: string): ModuleEval {
  const extra = hostNix === undefined ? [] : ['--arg', 'hostNix', hostNix];
  return evalJson([join('test', 'nix', 'eval-module.nix'), '--argstr', 'hostJson', JSON.stringify(host), ...extra]) as ModuleEval;
}

/** A Nix path value for an absolute path (`/. + "…"`: the same value as a literal, whatever characters the path has). */
function nixPath(path: string): string {
  return `/. + ${JSON.stringify(path).replace(/\$/g, '\\$')}`;
}

describe('nix/: the package and the NixOS module', () => {
  it('parses every .nix file in the repository (nix-instantiate --parse), and the check catches a syntax error', () => {
    const files = nixFiles(ROOT);
    expect(files.map((f) => relative(ROOT, f))).toEqual(
      expect.arrayContaining(['nix/package.nix', 'nix/module.nix', 'nix/npm-lock.nix', 'test/nix/stub-lib.nix']),
    );
    const failures = files
      .map((file) => ({ file: relative(ROOT, file), r: nixInstantiate(['--parse', file]) }))
      .filter(({ r }) => r.status !== 0)
      .map(({ file, r }) => `${file}: ${r.stderr.trim()}`);
    expect(failures).toEqual([]);

    const dir = mkdtempSync(join(tmpdir(), 'nfa-nix-'));
    try {
      const broken = join(dir, 'broken.nix');
      writeFileSync(broken, '{ a = 1; b = ; }\n');
      const r = nixInstantiate(['--parse', broken]);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/syntax error/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gives every registry package of package-lock.json its tarball URL back (nix/npm-lock.nix), as npm names it', () => {
    const registry = 'https://npm.invalid/registry';
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { version?: string; integrity?: string; resolved?: string; name?: string; link?: boolean }>;
    };
    const out = evalJson([
      '--expr',
      `import ./nix/npm-lock.nix { lock = builtins.fromJSON (builtins.readFile ./package-lock.json); registry = ${JSON.stringify(registry)}; }`,
    ]) as typeof lock;
    expect(Object.keys(out.packages).sort()).toEqual(Object.keys(lock.packages).sort());
    // The same rule, written again here: scoped names keep their scope in the path, not in the file name.
    const expected = (path: string, entry: { version?: string; name?: string }): string => {
      const name = entry.name ?? path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length);
      const base = name.startsWith('@') ? name.split('/')[1] : name;
      return `${registry}/${name}/-/${base}-${entry.version}.tgz`;
    };
    const wrong = Object.entries(lock.packages)
      .filter(([path, entry]) => path !== '' && entry.integrity !== undefined && entry.link !== true)
      .filter(([path, entry]) => out.packages[path].resolved !== expected(path, entry))
      .map(([path]) => `${path}: ${out.packages[path].resolved}`);
    expect(wrong).toEqual([]);
    expect(out.packages['node_modules/@nestjs/core'].resolved).toBe(
      `${registry}/@nestjs/core/-/core-${lock.packages['node_modules/@nestjs/core'].version}.tgz`,
    );
    // Everything else as npm wrote it: the root, and each entry's integrity.
    expect(out.packages['']).toEqual(lock.packages['']);
    expect(Object.entries(out.packages).filter(([path, e]) => e.integrity !== lock.packages[path].integrity)).toEqual([]);
  });

  describe('nix/module.nix, evaluated against a stand-in for nixpkgs lib (test/nix/stub-lib.nix)', () => {
    const unit = readUnit(readFileSync(UNIT_FILE, 'utf8'));
    const host = {
      enable: true,
      settings: {
        controlPlaneUrl: 'https://fleet.example.org:8443',
        heartbeatInterval: 30,
        caCert: '/etc/nixfleet/ca.pem',
        clientCert: '/etc/nixfleet/agent-openssh.pem',
      },
      trustFile: '/etc/nixfleet/fleet-trust.json',
      healthChecks: { 'app-http': { kind: 'http', url: 'http://127.0.0.1:8080/health', intervalSeconds: 10 } },
      extraArgs: ['--log-level', 'debug'],
    };
    let evaluated: ModuleEval;

    beforeAll(() => {
      evaluated = evalModule(host);
    });

    it('produces nothing when not enabled', () => {
      expect(evalModule({ enable: false })).toEqual({ active: false });
    });

    it('starts node by its absolute store path, with the Node.js flags of deploy/systemd, on the packaged main.js and the settings file', () => {
      const unitStart = (unit.Service.ExecStart?.[0] ?? '').split(/\s+/);
      expect(unitStart.slice(0, 2)).toEqual(['/usr/bin/env', 'node']);
      const unitFlags = unitStart.slice(
        2,
        unitStart.findIndex((w) => w.endsWith('/dist/main.js')),
      );
      const words = execWords(String(evaluated.serviceConfig.ExecStart));
      expect(words).toEqual([
        `${evaluated.nodejs}/bin/node`,
        ...unitFlags,
        `${evaluated.package}/lib/node_modules/nixfleet-agent/dist/main.js`,
        '--config',
        '/etc/nixfleet-agent.json',
        '--log-level',
        'debug',
      ]);
      expect(words[0]).toMatch(/^\/nix\/store\/[^/]+-nodejs-24\.11\.1\/bin\/node$/);
      expect(unitStart.slice(-2)).toEqual(['--config', '/etc/nixfleet-agent.json']);
      expect(String(evaluated.serviceConfig.ExecReload)).toMatch(/^\/nix\/store\/[^/]+-coreutils-[^/]+\/bin\/kill -HUP \$MAINPID$/);
      expect(unit.Service.ExecReload).toEqual(['/bin/kill -HUP $MAINPID']);
    });

    it('has every other [Service] setting of deploy/systemd/nixfleet-agent.service, with the same value, UMask=0077 among them, and no more', () => {
      const fromUnit = Object.fromEntries(
        Object.entries(unit.Service)
          .filter(([key]) => key !== 'ExecStart' && key !== 'ExecReload')
          .map(([key, values]) => [key, normalise(values)]),
      );
      const fromModule = Object.fromEntries(
        Object.entries(evaluated.serviceConfig)
          .filter(([key]) => key !== 'ExecStart' && key !== 'ExecReload')
          .map(([key, value]) => [key, unitValue(value)]),
      );
      expect(fromModule).toEqual(fromUnit);
      expect(fromModule.UMask).toBe('0077');
      expect(fromModule).toMatchObject({ Type: 'notify', NotifyAccess: 'main', Restart: 'always', RestartPreventExitStatus: '2' });
    });

    it('has the [Unit] ordering and [Install] target of the unit file, and activation tools on PATH', () => {
      expect(evaluated.description).toBe(unit.Unit.Description?.[0]);
      expect(evaluated.wants.join(' ')).toBe(normalise(unit.Unit.Wants ?? []));
      expect(evaluated.after.join(' ')).toBe(normalise(unit.Unit.After ?? []));
      expect(evaluated.wantedBy.join(' ')).toBe(normalise(unit.Install.WantedBy ?? []));
      expect(evaluated.path).toEqual([expect.stringMatching(/-nix-[\d.]+$/), expect.stringMatching(/-systemd-[\d.]+$/)]);
      expect(evaluated.systemPackages).toEqual([evaluated.package]);
    });

    it("writes the settings to /etc/nixfleet-agent.json with the agent's own file keys, trustFile included, and restarts on a change", () => {
      const file = evaluated.etc['nixfleet-agent.json'];
      expect(JSON.parse(file.text)).toEqual({
        controlPlaneUrl: 'https://fleet.example.org:8443',
        // Defaults of the module: the host name, the OpenSSH host key, the nixos backend.
        machineId: 'web-01',
        clientKey: '/etc/ssh/ssh_host_ed25519_key',
        activationBackend: 'nixos',
        heartbeatInterval: 30,
        caCert: '/etc/nixfleet/ca.pem',
        clientCert: '/etc/nixfleet/agent-openssh.pem',
        trustFile: '/etc/nixfleet/fleet-trust.json',
      });
      const known = new Set(SETTING_SPECS.map((s) => fileKeyOf(s.key)));
      expect(Object.keys(JSON.parse(file.text) as object).filter((k) => !known.has(k))).toEqual([]);
      expect(evaluated.restartTriggers).toEqual([file.path]);
    });

    it('copies a trustFile given as a path literal (./fleet/trust.json) into the store: the settings name the copy, not the source path', () => {
      const dir = mkdtempSync(join(tmpdir(), 'nfa-nix-trust-'));
      try {
        const trustFileOf = (path: string): string => {
          const out = evalModule(host, `{ trustFile = ${nixPath(path)}; }`);
          return (JSON.parse(out.etc['nixfleet-agent.json'].text) as { trustFile: string }).trustFile;
        };
        for (const sub of ['a', 'b', 'c']) mkdirSync(join(dir, sub));
        writeFileSync(join(dir, 'a', 'trust.json'), '{"keys":["one"]}\n');
        writeFileSync(join(dir, 'b', 'trust.json'), '{"keys":["one"]}\n');
        writeFileSync(join(dir, 'c', 'trust.json'), '{"keys":["two"]}\n');
        const [a, b, c] = ['a', 'b', 'c'].map((sub) => trustFileOf(join(dir, sub, 'trust.json')));
        // --readonly-mode: Nix computes the copy's store path without writing it.
        expect(a).toMatch(/^\/nix\/store\/[0-9a-z]{32}-trust\.json$/);
        // The copy is named by its content: the same file elsewhere is the same copy, other keys another.
        expect(b).toBe(a);
        expect(c).not.toBe(a);
        expect(c).toMatch(/^\/nix\/store\/[0-9a-z]{32}-trust\.json$/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('writes the health checks where the agent reads them by default, and none when there are none', () => {
      expect(JSON.parse(evaluated.etc['nixfleet/agent/health-checks.json'].text)).toEqual(host.healthChecks);
      expect(SETTING_SPECS.find((s) => s.key === 'healthChecksFile')?.default?.({ stdoutIsTty: false })).toBe(
        '/etc/nixfleet/agent/health-checks.json',
      );
      const bare = evalModule({ enable: true, settings: { controlPlaneUrl: 'https://fleet.example.org:8443', clientKey: null } });
      expect(Object.keys(bare.etc)).toEqual(['nixfleet-agent.json']);
    });

    it('writes a settings file the real agent accepts (`nixfleet-agent config`, exit 0), with real certificates at its paths', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'nfa-nix-cfg-'));
      try {
        const pki = await makePki(join(dir, 'pki'), { machineId: 'web-01' });
        const trustFile = join(dir, 'trust.json');
        await new ManifestSigner().writeTrustFile(trustFile);
        const real = evalModule({
          enable: true,
          settings: {
            controlPlaneUrl: 'https://fleet.example.org:8443',
            caCert: pki.caCertPath,
            clientCert: pki.clientOpensshEd25519.certPath,
            clientKey: pki.clientOpensshEd25519.keyPath,
            stateDir: join(dir, 'state'),
          },
          trustFile,
        });
        const file = join(dir, 'nixfleet-agent.json');
        writeFileSync(file, real.etc['nixfleet-agent.json'].text);
        const r = spawnSync(process.execPath, [AGENT_MAIN, 'config', '--config', file], {
          env: cleanEnv(),
          encoding: 'utf8',
          timeout: 20_000,
        });
        expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
        expect(r.stdout).toMatch(/--machine-id +web-01 +file "machineId" in /);
        expect(r.stdout).toMatch(/--activation-backend +nixos +file "activationBackend" in /);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('refuses a client key without its certificate, as the agent would', () => {
      const r = evalModuleRaw(JSON.stringify({ enable: true, settings: { controlPlaneUrl: 'https://cp:8443' } }));
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('services.nixfleet-agent.settings: clientCert and clientKey go together');
    });

    it('refuses a value of the wrong type and a missing control plane URL, naming the option', () => {
      const badBackend = evalModuleRaw(
        JSON.stringify({ enable: true, settings: { controlPlaneUrl: 'https://cp:8443', activationBackend: 'docker', clientKey: null } }),
      );
      expect(badBackend.status).not.toBe(0);
      expect(badBackend.stderr).toContain('services.nixfleet-agent.settings.activationBackend: "docker" is not a one of');
      const noUrl = evalModuleRaw(JSON.stringify({ enable: true, settings: { clientKey: null } }));
      expect(noUrl.status).not.toBe(0);
      expect(noUrl.stderr).toContain('the option services.nixfleet-agent.settings.controlPlaneUrl is used but not defined');
    });
  });
});
