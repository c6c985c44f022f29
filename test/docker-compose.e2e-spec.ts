import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { builtinModules } from 'node:module';
import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readlinkSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, posix, relative, resolve } from 'node:path';
import dockerignore from '@balena/dockerignore';
import { parse as parseYaml } from 'yaml';
import { getFromAdmin } from '../src/cli/admin-request';
import { ACTIVATION_BACKENDS } from '../src/config/settings';
import { STATUS_EXIT } from '../src/cli/status.command';
import { cleanEnv } from './support/agent-process';
import { until } from './support/polling';
import { freePort } from '../dev/free-port';

/*
 * No Docker engine runs here. This test keeps docker/Dockerfile and
 * docker/compose.yaml honest by reading them and replaying them outside
 * Docker: each stage's COPYs into a scratch dir, its npm scripts, its
 * smoke check; then the compose services' own commands and environment
 * (container paths mapped into the scratch dir, free ports for 8443/9850).
 */

const ROOT = resolve(__dirname, '..');
const DOCKER_DIR = join(ROOT, 'docker');
const COMPOSE_FILE = join(DOCKER_DIR, 'compose.yaml');

type Json = Record<string, unknown>;

// ---- Dockerfile ----

interface Instruction {
  op: string;
  args: string;
}

interface Stage {
  name: string;
  /** An image, or the name of an earlier stage. */
  from: string;
  instructions: Instruction[];
}

interface Dockerfile {
  stages: Stage[];
}

/** Enough of the Dockerfile grammar for this file: comments, continuations, global ARG defaults, FROM ... AS. */
function parseDockerfile(text: string): Dockerfile {
  const logical: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (pending === '' && (line === '' || line.startsWith('#'))) continue;
    if (line.startsWith('#')) continue; // a comment inside a continued instruction
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1).trim()} `;
      continue;
    }
    logical.push(`${pending}${line}`.trim());
    pending = '';
  }
  const globalArgs: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const line of logical) {
    const m = /^(\S+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const op = m[1].toUpperCase();
    const args = m[2];
    if (op === 'FROM') {
      const from = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!from) throw new Error(`cannot read FROM ${args}`);
      const image = from[1].replace(/\$\{(\w+)\}|\$(\w+)/g, (_all, a: string | undefined, b: string | undefined) => {
        const name = a ?? b ?? '';
        if (!(name in globalArgs)) throw new Error(`FROM uses ARG ${name}, which has no default before the first FROM`);
        return globalArgs[name];
      });
      stages.push({ name: from[2] ?? `#${stages.length}`, from: image, instructions: [] });
    } else if (stages.length === 0) {
      if (op !== 'ARG') throw new Error(`${op} before the first FROM`);
      const arg = /^(\w+)(?:=(.*))?$/.exec(args);
      if (arg?.[2] !== undefined) globalArgs[arg[1]] = arg[2];
    } else {
      stages[stages.length - 1].instructions.push({ op, args });
    }
  }
  return { stages };
}

interface Copy {
  from: string | null;
  sources: string[];
  dest: string;
}

function parseCopy(args: string): Copy {
  let from: string | null = null;
  const words = args.startsWith('[') ? (JSON.parse(args) as string[]) : args.split(/\s+/);
  const rest: string[] = [];
  for (const w of words) {
    const flag = /^--(\w+)(?:=(.*))?$/.exec(w);
    if (flag && rest.length === 0) {
      if (flag[1] === 'from') from = flag[2] ?? null;
      continue;
    }
    rest.push(w);
  }
  if (rest.length < 2) throw new Error(`COPY needs sources and a destination: ${args}`);
  return { from, sources: rest.slice(0, -1), dest: rest[rest.length - 1] };
}

function execForm(args: string, what: string): string[] {
  const parsed: unknown = JSON.parse(args);
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) throw new Error(`${what} must be a JSON array of strings`);
  return parsed;
}

function stageOf(dockerfile: Dockerfile, name: string): Stage {
  const stage = dockerfile.stages.find((s) => s.name === name);
  if (!stage) throw new Error(`no stage ${name} in the Dockerfile (stages: ${dockerfile.stages.map((s) => s.name).join(', ')})`);
  return stage;
}

/** What a stage ends up with: its WORKDIR, ENV, LABELs, ENTRYPOINT, HEALTHCHECK (inherited from an earlier stage). */
interface StageConfig {
  workdir: string;
  env: Record<string, string>;
  labels: Record<string, string>;
  entrypoint: string[] | null;
  /** The HEALTHCHECK's options (`interval` → `30s`) and its CMD in exec form. */
  healthcheck: { options: Record<string, string>; cmd: string[] } | null;
}

/** `KEY="value" KEY2=value` (LABEL, and ENV in that form). */
function keyValues(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of args.matchAll(/([\w.-]+)=(?:"((?:[^"\\]|\\.)*)"|(\S+))/g)) out[m[1]] = m[2] ?? m[3];
  return out;
}

function parseHealthcheck(args: string): NonNullable<StageConfig['healthcheck']> {
  const m = /^((?:--[\w-]+=\S+\s+)*)CMD\s+(\[.*\])$/.exec(args);
  if (!m) throw new Error(`HEALTHCHECK ${args}: only [--option=value]... CMD ["exec", "form"] is read here`);
  const options: Record<string, string> = {};
  for (const o of m[1]
    .trim()
    .split(/\s+/)
    .filter((x) => x !== '')) {
    const [name, value] = o.slice(2).split('=');
    options[name] = value;
  }
  return { options, cmd: execForm(m[2], 'HEALTHCHECK CMD') };
}

function configOf(dockerfile: Dockerfile, name: string): StageConfig {
  const stage = stageOf(dockerfile, name);
  const base: StageConfig = dockerfile.stages.some((s) => s.name === stage.from)
    ? configOf(dockerfile, stage.from)
    : { workdir: '/', env: {}, labels: {}, entrypoint: null, healthcheck: null };
  const config: StageConfig = { ...base, env: { ...base.env }, labels: { ...base.labels } };
  for (const { op, args } of stage.instructions) {
    if (op === 'WORKDIR') config.workdir = posix.resolve(config.workdir, args);
    if (op === 'ENV') {
      const m = /^(\w+)=(.*)$/.exec(args);
      if (!m) throw new Error(`ENV ${args}: only KEY=value is read here`);
      config.env[m[1]] = m[2];
    }
    if (op === 'LABEL') Object.assign(config.labels, keyValues(args));
    if (op === 'ENTRYPOINT') config.entrypoint = execForm(args, 'ENTRYPOINT');
    if (op === 'HEALTHCHECK') config.healthcheck = args === 'NONE' ? null : parseHealthcheck(args);
  }
  return config;
}

// ---- replaying stages outside Docker ----

interface PackageLock {
  packages: Record<string, { dev?: boolean }>;
}

/** Each stage's filesystem is a scratch dir standing for "/". */
class StageReplay {
  private readonly roots = new Map<string, string>();
  /** The build context as Docker sends it: without what .dockerignore leaves out. */
  private readonly ignored: (relativePath: string) => boolean;

  constructor(
    private readonly dockerfile: Dockerfile,
    private readonly scratch: string,
    private readonly context: string,
  ) {
    const rules = dockerignore().add(readFileSync(join(context, '.dockerignore'), 'utf8'));
    this.ignored = (path) => rules.ignores(path);
  }

  root(stage: string): string {
    const root = this.roots.get(stage);
    if (!root) throw new Error(`stage ${stage} was not built`);
    return root;
  }

  /** Container path → host path inside the stage's scratch root. */
  hostPath(stage: string, containerPath: string): string {
    return join(this.root(stage), containerPath);
  }

  build(name: string): void {
    if (this.roots.has(name)) return;
    const stage = stageOf(this.dockerfile, name);
    const root = join(this.scratch, `stage-${name}`);
    if (this.dockerfile.stages.some((s) => s.name === stage.from)) {
      this.build(stage.from);
      // verbatimSymlinks: node_modules stays the symlink npm ci stood for.
      cpSync(this.root(stage.from), root, { recursive: true, verbatimSymlinks: true });
    } else {
      mkdirSync(root, { recursive: true });
    }
    this.roots.set(name, root);
    let workdir = this.dockerfile.stages.some((s) => s.name === stage.from) ? configOf(this.dockerfile, stage.from).workdir : '/';
    for (const { op, args } of stage.instructions) {
      switch (op) {
        case 'WORKDIR':
          workdir = posix.resolve(workdir, args);
          mkdirSync(join(root, workdir), { recursive: true });
          break;
        case 'COPY':
          this.copy(name, workdir, parseCopy(args));
          break;
        case 'RUN':
          this.run(name, workdir, args);
          break;
        case 'ARG':
        case 'ENV':
        case 'USER':
        case 'EXPOSE':
        case 'ENTRYPOINT':
        case 'CMD':
        case 'LABEL':
        case 'HEALTHCHECK':
          break;
        default:
          throw new Error(`${op} in stage ${name}: this test does not know how to replay it`);
      }
    }
  }

  private copy(stage: string, workdir: string, c: Copy): void {
    const destination = join(this.root(stage), posix.resolve(workdir, c.dest));
    const intoDir = c.dest.endsWith('/') || c.sources.length > 1;
    for (const source of c.sources) {
      let from: string;
      if (c.from === null) {
        from = resolve(this.context, source);
        if (relative(this.context, from).startsWith('..')) throw new Error(`COPY ${source} reaches outside the build context`);
        if (!existsSync(from)) throw new Error(`COPY ${source}: no such file in the build context ${this.context}`);
        if (this.ignored(relative(this.context, from))) throw new Error(`COPY ${source}: .dockerignore leaves it out of the build context`);
      } else {
        if (!this.dockerfile.stages.some((s) => s.name === c.from)) throw new Error(`COPY --from=${c.from}: no such stage`);
        this.build(c.from);
        from = this.hostPath(c.from, source);
        if (!existsSync(from)) throw new Error(`COPY --from=${c.from} ${source}: the stage has no such path`);
      }
      const target = lstatSync(from).isDirectory() || !intoDir ? destination : join(destination, basename(from));
      mkdirSync(dirname(target), { recursive: true });
      // From the build context, only what Docker would send; another stage's files are all there.
      const filter = c.from === null ? (path: string): boolean => !this.ignored(relative(this.context, path)) : undefined;
      cpSync(from, target, { recursive: true, verbatimSymlinks: true, filter });
    }
  }

  private run(stage: string, workdir: string, command: string): void {
    const cwd = join(this.root(stage), workdir);
    for (const step of command.split('&&').map((s) => s.trim())) {
      if (/^(apt-get|rm -rf \/var\/lib\/apt\/lists)\b/.test(step)) continue; // the image's OS; not this host's
      const dirs = /^install -d\s+(.*)$/.exec(step);
      if (dirs) {
        this.installDirs(stage, dirs[1]);
        continue;
      }
      if (/^npm ci\b/.test(step)) {
        // Same lockfile, installed once for the repo: link it rather than hit the registry.
        expect(readFileSync(join(cwd, 'package-lock.json'), 'utf8')).toBe(readFileSync(join(ROOT, 'package-lock.json'), 'utf8'));
        symlinkSync(join(ROOT, 'node_modules'), join(cwd, 'node_modules'));
        continue;
      }
      if (step === 'npm prune --omit=dev') {
        this.pruneDev(cwd);
        continue;
      }
      const script = /^npm run (\S+)$/.exec(step);
      if (script) {
        const scripts = (JSON.parse(readFileSync(join(cwd, 'package.json'), 'utf8')) as { scripts?: Record<string, string> }).scripts ?? {};
        if (!(script[1] in scripts)) throw new Error(`RUN ${step}: package.json has no script ${script[1]}`);
        this.exec(stage, step, 'npm', ['run', script[1]], cwd);
        continue;
      }
      const node = /^node (.+)$/.exec(step);
      if (node) {
        this.exec(stage, step, process.execPath, node[1].split(/\s+/), cwd);
        continue;
      }
      throw new Error(`RUN ${step} in stage ${stage}: this test does not know how to replay it`);
    }
  }

  /** `install -d [-o USER] [-g GROUP] [-m MODE] DIR...`: the dirs, in the stage's root, with their mode (owners are the image's). */
  private installDirs(stage: string, args: string): void {
    const words = args.split(/\s+/);
    let mode: number | undefined;
    const dirs: string[] = [];
    for (let i = 0; i < words.length; i++) {
      if (words[i] === '-o' || words[i] === '-g') i++;
      else if (words[i] === '-m') mode = parseInt(words[++i], 8);
      else if (words[i].startsWith('/')) dirs.push(words[i]);
      else throw new Error(`RUN install -d ${args}: this test does not know ${words[i]}`);
    }
    for (const dir of dirs) {
      const path = this.hostPath(stage, dir);
      mkdirSync(path, { recursive: true });
      if (mode !== undefined) chmodSync(path, mode);
    }
  }

  /** The production packages of the lockfile, each linked from the repo's install: what `npm prune --omit=dev` leaves. */
  private pruneDev(cwd: string): void {
    const lock = JSON.parse(readFileSync(join(cwd, 'package-lock.json'), 'utf8')) as PackageLock;
    const modules = join(cwd, 'node_modules');
    // It is the link npm ci stood for: remove the link, never what it points to.
    if (!lstatSync(modules).isSymbolicLink()) throw new Error(`${modules} should be the link to the repository's node_modules`);
    unlinkSync(modules);
    mkdirSync(modules);
    for (const [path, entry] of Object.entries(lock.packages)) {
      const top = /^node_modules\/((?:@[^/]+\/)?[^/]+)$/.exec(path);
      if (!top || entry.dev === true) continue;
      const link = join(modules, top[1]);
      mkdirSync(dirname(link), { recursive: true });
      symlinkSync(join(ROOT, 'node_modules', top[1]), link);
    }
  }

  private exec(stage: string, step: string, cmd: string, args: string[], cwd: string): void {
    const r = spawnSync(cmd, args, { cwd, env: cleanEnv(), encoding: 'utf8', timeout: 300_000 });
    if (r.status !== 0) {
      throw new Error(`RUN ${step} (stage ${stage}) failed with ${r.status ?? r.signal}:\n${r.stdout}\n${r.stderr}`);
    }
  }
}

// ---- compose ----

interface Service {
  build?: { context?: string; dockerfile?: string; target?: string };
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string | number | boolean>;
  volumes?: string[];
  healthcheck?: { test?: string[] };
  ports?: string[];
}

function services(): Record<string, Service> {
  const doc = parseYaml(readFileSync(COMPOSE_FILE, 'utf8')) as { services?: Record<string, Service> };
  if (!doc.services) throw new Error('compose.yaml has no services');
  return doc.services;
}

interface Child {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | string>;
}

function launch(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Child {
  const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout?.on('data', (c: Buffer) => (text += c.toString('utf8')));
  child.stderr?.on('data', (c: Buffer) => (text += c.toString('utf8')));
  const exited = new Promise<number | string>((res) => child.once('exit', (code, signal) => res(code ?? signal ?? 'unknown')));
  return { child, output: () => text, exited };
}

async function stop(c: Child | null): Promise<void> {
  if (!c) return;
  if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGTERM');
  await c.exited;
}

/** Every module name that compiled JS under `dir` requires, bare names only (not relative paths). */
function bareRequires(dir: string): Map<string, string> {
  const found = new Map<string, string>();
  for (const entry of readdirSync(dir, { recursive: true, encoding: 'utf8' })) {
    if (!entry.endsWith('.js')) continue;
    const text = readFileSync(join(dir, entry), 'utf8');
    for (const m of text.matchAll(/require\("([^".][^"]*)"\)/g)) {
      const name = m[1].startsWith('@') ? m[1].split('/').slice(0, 2).join('/') : m[1].split('/')[0];
      if (!found.has(name)) found.set(name, entry);
    }
  }
  return found;
}

describe('docker/Dockerfile and docker/compose.yaml, replayed outside Docker', () => {
  const dockerfile = parseDockerfile(readFileSync(join(DOCKER_DIR, 'Dockerfile'), 'utf8'));
  let scratch: string;
  let replay: StageReplay;
  let built = false;
  let cp: Child | null = null;
  let agent: Child | null = null;

  beforeAll(() => {
    scratch = mkdtempSync(join(tmpdir(), 'nfa-docker-'));
    // A node_modules above the scratch dir would hide a dependency the pruned image lacks.
    for (let dir = dirname(scratch); ; dir = dirname(dir)) {
      expect(existsSync(join(dir, 'node_modules'))).toBe(false);
      if (dirname(dir) === dir) break;
    }
  });

  afterAll(async () => {
    await stop(agent);
    await stop(cp);
    rmSync(scratch, { recursive: true, force: true });
  });

  it('builds each compose service from this Dockerfile at the repository root, to a stage it defines', () => {
    const all = services();
    expect(Object.keys(all).sort()).toEqual(['agent', 'control-plane']);
    for (const [name, service] of Object.entries(all)) {
      const build = service.build;
      expect(build).toBeDefined();
      const context = resolve(DOCKER_DIR, build?.context ?? '.');
      expect({ name, context }).toEqual({ name, context: ROOT });
      expect(resolve(context, build?.dockerfile ?? 'Dockerfile')).toBe(join(DOCKER_DIR, 'Dockerfile'));
      expect(dockerfile.stages.map((s) => s.name)).toContain(build?.target);
    }
    // Every FROM names an image or an earlier stage; every COPY --from an earlier stage.
    dockerfile.stages.forEach((stage, i) => {
      const earlier = dockerfile.stages.slice(0, i).map((s) => s.name);
      if (!stage.from.includes(':')) expect(earlier).toContain(stage.from);
      for (const ins of stage.instructions.filter((x) => x.op === 'COPY')) {
        const from = parseCopy(ins.args).from;
        if (from !== null) expect(earlier).toContain(from);
      }
    });
  });

  it('sends Docker no host build or install: .dockerignore leaves out node_modules, dist*, .demo, .git, coverage', () => {
    const rules = dockerignore().add(readFileSync(join(ROOT, '.dockerignore'), 'utf8'));
    const leftOut = [
      'node_modules',
      'node_modules/fs-ext/build/Release/fs_ext.node',
      'dist/main.js',
      'dist-dev/dev/demo.js',
      'dist-bench',
      '.demo/agent.log',
      '.git/HEAD',
      'coverage/lcov.info',
      'dev/node_modules/x',
    ];
    expect(leftOut.filter((path) => !rules.ignores(path))).toEqual([]);
    // What the stages COPY from the context stays in it (the replay below fails on a COPY of an ignored path, too).
    const copied = dockerfile.stages.flatMap((stage) =>
      stage.instructions
        .filter((i) => i.op === 'COPY')
        .map((i) => parseCopy(i.args))
        .filter((c) => c.from === null)
        .flatMap((c) => c.sources),
    );
    expect(copied.length).toBeGreaterThan(0);
    expect(copied.filter((source) => rules.ignores(posix.normalize(source)))).toEqual([]);
  });

  it('names the activation backends the runtime image can use, and defaults to one of them (no systemd-run, no Nix in a container)', () => {
    const runtime = configOf(dockerfile, 'runtime');
    const usable = (runtime.labels['org.nixfleet.agent.activation-backends'] ?? '').split(/\s+/);
    const chosen = runtime.labels['org.nixfleet.agent.activation-backend.default'];
    expect(usable.filter((b) => !(ACTIVATION_BACKENDS as readonly string[]).includes(b))).toEqual([]);
    expect(usable).not.toContain('nixos');
    expect(usable).toContain(chosen);
    expect(runtime.env.NIXFLEET_AGENT_ACTIVATION_BACKEND).toBe(chosen);
    // The agent service leaves it to the image.
    expect(services().agent.environment).not.toHaveProperty('NIXFLEET_AGENT_ACTIVATION_BACKEND');
  });

  it("gives the runtime image a HEALTHCHECK that runs the agent's /healthz check with node (the image has no curl)", () => {
    const runtime = configOf(dockerfile, 'runtime');
    expect(runtime.healthcheck?.cmd).toEqual(['node', 'dist/cli/healthcheck.js']);
    // Docker's defaults would judge the agent before its 30 s boot handshake is over.
    expect(runtime.healthcheck?.options).toMatchObject({ 'start-period': expect.stringMatching(/^\d+s$/) });
    expect(Number.parseInt(runtime.healthcheck?.options['start-period'] ?? '0', 10)).toBeGreaterThanOrEqual(30);
  });

  it('compiles native addons in the build stage when the lockfile has any', () => {
    // A package with a binding.gyp and no install script of its own is built by npm with node-gyp.
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as PackageLock;
    const native = Object.keys(lock.packages).filter((path) => {
      if (!path.startsWith('node_modules/') || !existsSync(join(ROOT, path, 'binding.gyp'))) return false;
      const scripts =
        (JSON.parse(readFileSync(join(ROOT, path, 'package.json'), 'utf8')) as { scripts?: Record<string, string> }).scripts ?? {};
      return scripts.install === undefined || /node-gyp/.test(scripts.install);
    });
    if (native.length === 0) return;
    const runs = stageOf(dockerfile, 'build')
      .instructions.filter((i) => i.op === 'RUN')
      .map((i) => i.args)
      .join('\n');
    const missingTools = ['python3', 'make', 'g++'].filter(
      (tool) => !new RegExp(`apt-get install[^\\n]*\\s${tool.replace(/\+/g, '\\+')}(\\s|$)`).test(runs),
    );
    expect({ native, missingTools }).toEqual({ native, missingTools: [] });
  });

  it('needs no development dependency at run time: the runtime image prunes them', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    const production = new Set(Object.keys(pkg.dependencies ?? {}));
    const builtins = new Set(builtinModules);
    const missing = [...bareRequires(join(ROOT, 'dist'))]
      .filter(([name]) => !name.startsWith('node:') && !builtins.has(name) && !production.has(name))
      .map(([name, file]) => `${name} (required by dist/${file}) is not in package.json "dependencies"`);
    expect(missing).toEqual([]);
  });

  it('replays the image builds: the same COPYs into a scratch dir, the same npm scripts and smoke check', () => {
    replay = new StageReplay(dockerfile, scratch, ROOT);
    for (const target of new Set(Object.values(services()).map((s) => s.build?.target ?? ''))) replay.build(target);
    built = true;
  }, 300_000);

  it("runs the services' commands and environment: the agent heartbeats to the dev CP and answers /status", async () => {
    if (!built) throw new Error('the image builds did not replay (see the test before); nothing to run');
    const all = services();
    const cpService = all['control-plane'];
    const agentService = all.agent;
    const cpStage = cpService.build?.target ?? '';
    const agentStage = agentService.build?.target ?? '';
    const cpPort = await freePort();
    const adminPort = await freePort();

    // Container paths → scratch paths; every volume the services mount must be mapped.
    const volumes = { pki: join(scratch, 'volume-pki'), state: join(scratch, 'volume-state') };
    const mounts = new Map<string, string>();
    for (const service of [cpService, agentService]) {
      for (const spec of service.volumes ?? []) {
        const [volume, target] = spec.split(':');
        expect(Object.keys(volumes)).toContain(volume);
        mounts.set(target, volumes[volume as keyof typeof volumes]);
      }
    }
    mkdirSync(volumes.pki, { recursive: true });
    const tmpDir = join(scratch, 'container-tmp');
    mkdirSync(tmpDir, { recursive: true });
    mounts.set('/tmp', tmpDir);
    // Paths the agent's image made itself (RUN install -d), not volumes: in its replayed root.
    mounts.set('/nix/store', replay.hostPath(agentStage, '/nix/store'));
    const remap = (value: string): string => {
      const out = value
        .replace(/https:\/\/control-plane:8443/g, `https://127.0.0.1:${cpPort}`)
        .replace(/\b0\.0\.0\.0:9850\b/g, `127.0.0.1:${adminPort}`)
        .replace(/\b8443\b/g, String(cpPort));
      // One pass, longest first: a mapped path must not be mapped again.
      const targets = [...mounts.keys()].sort((a, b) => b.length - a.length).map((t) => t.replace(/[/.]/g, '\\$&'));
      const paths = new RegExp(`(^|[\\s"'=])(${targets.join('|')})(?=/|$|[\\s"'])`, 'g');
      return out.replace(paths, (_all, before: string, target: string) => `${before}${mounts.get(target) ?? target}`);
    };

    // The control plane: its image's entrypoint plus the compose command.
    const cpConfig = configOf(dockerfile, cpStage);
    const cpArgv = [...(cpConfig.entrypoint ?? []), ...(cpService.command ?? [])].map(remap);
    expect(cpArgv[0]).toBe('node');
    expect(cpService.command).toEqual(expect.arrayContaining(['--server-name', 'control-plane']));
    cp = launch(process.execPath, cpArgv.slice(1), replay.hostPath(cpStage, cpConfig.workdir), cleanEnv(cpConfig.env));
    const cpRef = cp;
    await until(
      () => (/listening on/.test(cpRef.output()) ? true : null),
      30_000,
      'the dev CP to listen',
      () => `output:\n${cpRef.output()}`,
    );

    // Its healthcheck, as Docker would run it inside the container.
    const health = (cpService.healthcheck?.test ?? []).map(remap);
    expect(health.slice(0, 2)).toEqual(['CMD', 'node']);
    expect(spawnSync(process.execPath, health.slice(2), { encoding: 'utf8', timeout: 10_000 }).status).toBe(0);

    // The name the agent dials in compose is in the server certificate, and so is 127.0.0.1, which it dials here.
    const serverCert = new X509Certificate(readFileSync(join(volumes.pki, 'server.crt')));
    const dialled = new URL(String(agentService.environment?.NIXFLEET_AGENT_CONTROL_PLANE_URL)).hostname;
    expect(serverCert.subjectAltName).toContain(`DNS:${dialled}`);
    expect(serverCert.subjectAltName).toContain('IP Address:127.0.0.1');

    // The agent: the compose entrypoint, which must end by exec-ing the image's own entrypoint.
    const agentConfig = configOf(dockerfile, agentStage);
    const entrypoint = agentService.entrypoint ?? [];
    expect(entrypoint.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    expect(entrypoint[2]).toMatch(new RegExp(`&& exec ${(agentConfig.entrypoint ?? []).join(' ').replace(/\./g, '\\.')}$`));
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(agentConfig.env)) env[k] = remap(v);
    for (const [k, v] of Object.entries(agentService.environment ?? {})) env[k] = remap(String(v));
    for (const path of ['NIXFLEET_AGENT_CA_CERT', 'NIXFLEET_AGENT_CLIENT_CERT', 'NIXFLEET_AGENT_CLIENT_KEY']) {
      expect({ path, exists: existsSync(env[path]) }).toEqual({ path, exists: true });
    }
    const agentEnv = cleanEnv({ ...env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` });
    agent = launch('/bin/sh', ['-c', remap(entrypoint[2])], replay.hostPath(agentStage, agentConfig.workdir), agentEnv);
    const agentRef = agent;
    const admin = { kind: 'tcp' as const, host: '127.0.0.1', port: adminPort };
    const status = await until(
      async () => {
        const { body } = await getFromAdmin(admin, '/status');
        const doc = body as Json;
        return (doc.heartbeat as Json).lastSuccessAt === null ? null : doc;
      },
      30_000,
      'a successful heartbeat on /status',
      () => `agent output:\n${agentRef.output()}\nCP output:\n${cpRef.output()}`,
    );
    expect(status).toMatchObject({
      machineId: 'web-01',
      controlPlaneUrl: `https://127.0.0.1:${cpPort}`,
      recovery: { reachedControlPlane: true },
      heartbeat: { intervalSecs: 5, consecutiveFailures: 0 },
    });
    expect(statSync(join(volumes.state, 'events.log')).isFile()).toBe(true);

    // The image's activation backend, by default: the one its label names, and nothing it needs is missing.
    expect(status.activation).toMatchObject({
      backend: agentConfig.labels['org.nixfleet.agent.activation-backend.default'],
      preflight: { problems: [] },
    });

    // The rollout the compose file asks the CP for: dispatched once the agent heartbeated, activated
    // by re-pointing the current-system link, soaked and converged; the CP's log tells it.
    const dispatchArg = (cpService.command ?? [])[(cpService.command ?? []).indexOf('--dispatch') + 1] ?? '';
    const [rolloutId, target] = dispatchArg.split('=');
    expect(target).toMatch(/^b{32}-nixos-system-web-01-/);
    const converged = await until(
      async () => {
        const doc = (await getFromAdmin(admin, '/status')).body as Json;
        const rollout = (doc.rollouts as Json[]).find((r) => r.rolloutId === rolloutId);
        return rollout?.state === 'Converged' ? doc : null;
      },
      40_000,
      `rollout ${rolloutId} Converged on /status`,
      () => `agent output:\n${agentRef.output()}\nCP output:\n${cpRef.output()}`,
    );
    expect(converged.currentClosure).toBe(target);
    expect(readlinkSync(join(tmpDir, 'current-system'))).toBe(join(mounts.get('/nix/store') ?? '', target));
    await until(
      () => (new RegExp(`event Converged seq \\d+ of ${rolloutId}`).test(cpRef.output()) ? true : null),
      10_000,
      'the CP to print the Converged event',
      () => `CP output:\n${cpRef.output()}`,
    );
    const cpLines = cpRef.output().split('\n');
    const kinds = cpLines.flatMap((l) => new RegExp(`^event (\\w+) seq \\d+ of ${rolloutId}$`).exec(l)?.[1] ?? []);
    expect(kinds).toEqual(['DispatchAck', 'ActivationStarted', 'ActivationCompleted', 'ProbeTopologyDeclared', 'Converged']);
    expect(cpLines.findIndex((l) => l.startsWith('queued a dispatch for web-01'))).toBeGreaterThan(-1);

    // `docker compose exec agent node dist/main.js status`: the same environment finds the admin endpoint.
    const cli = spawnSync(process.execPath, ['dist/main.js', 'status'], {
      cwd: replay.hostPath(agentStage, agentConfig.workdir),
      env: agentEnv,
      encoding: 'utf8',
      timeout: 15_000,
    });
    expect({ code: cli.status, stderr: cli.stderr }).toEqual({ code: STATUS_EXIT.healthy, stderr: '' });
    expect(cli.stdout).toMatch(/^web-01 .*: HEALTHY$/m);

    // The image's HEALTHCHECK, as Docker runs it in the container: its CMD, in the image's workdir and environment.
    const healthcheck = agentConfig.healthcheck;
    expect(healthcheck?.cmd[0]).toBe('node');
    const runHealthcheck = (): { status: number | null; out: string } => {
      const r = spawnSync(process.execPath, (healthcheck?.cmd ?? []).slice(1), {
        cwd: replay.hostPath(agentStage, agentConfig.workdir),
        env: agentEnv,
        encoding: 'utf8',
        timeout: 10_000,
      });
      return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
    };
    expect(runHealthcheck()).toEqual({ status: 0, out: `nixfleet-agent healthcheck: 127.0.0.1:${adminPort}/healthz ok` });

    // Its logs are JSON lines, as the compose environment asks.
    for (const line of agentRef
      .output()
      .split('\n')
      .filter((l) => l !== ''))
      expect(() => JSON.parse(line) as unknown).not.toThrow();

    // `docker compose stop`: SIGTERM to PID 1 (the exec'd node), a clean exit; the HEALTHCHECK then fails.
    agentRef.child.kill('SIGTERM');
    expect(await agentRef.exited).toBe(0);
    const after = runHealthcheck();
    expect(after.status).toBe(1);
    expect(after.out).toMatch(
      new RegExp(`^nixfleet-agent healthcheck: no answer from 127\\.0\\.0\\.1:${adminPort}/healthz \\(.*ECONNREFUSED`),
    );
  }, 90_000);
});
