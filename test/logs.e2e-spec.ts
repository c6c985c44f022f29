import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, fstatSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { JsonLogEntry } from '../src/logging/agent-logger';
import { fakeClosure, makeWorld, type World } from './support/agent-harness';
import {
  AGENT_MAIN,
  cleanEnv,
  logLines,
  type RunningAgent,
  startAgent,
  worldAgentArgs,
  type WorldAgentOptions,
} from './support/agent-process';

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'verbose'];
const KEYS = ['time', 'level', 'context', 'message', 'fields', 'stack'];
/** Nest's readable line: `[prefix] pid  - date, time   LEVEL [Context] message`. */
const TEXT_LINE = /^\[nixfleet-agent\] \d+ {2}- \S.* +(LOG|WARN|ERROR|DEBUG|VERBOSE|FATAL) \[[^\]]+\] \S/;
/** The time in a text line: ISO 8601, UTC, milliseconds. */
const TEXT_TIME = /^(?:<\d>)?\[nixfleet-agent\] \d+ {2}- (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z) +[A-Z]+ \[/;
/** sd-daemon(3) priorities of the JSON levels. */
const PRIORITY: Record<string, number> = { fatal: 3, error: 3, warn: 4, info: 6, debug: 7, verbose: 7 };
/** …and of Nest's text level words. */
const TEXT_PRIORITY: Record<string, number> = { FATAL: 3, ERROR: 3, WARN: 4, LOG: 6, DEBUG: 7, VERBOSE: 7 };
const TARGET = fakeClosure('web-01-26.11', 'b');

interface Started {
  agent: RunningAgent;
  stdout: () => string;
  stderr: () => string;
}

/** The agent's flags for a test, minus the harness's own --log-format. */
function agentArgs(world: World, name: string, extra: string[], o: Partial<WorldAgentOptions> = {}): string[] {
  const args = worldAgentArgs(world, { stateDir: join(world.dir, name), adminListen: `unix:${join(world.dir, `${name}.sock`)}`, ...o });
  const at = args.indexOf('--log-format');
  if (at >= 0) args.splice(at, 2);
  return [...args, ...extra];
}

/** The built agent with the test's flags, minus the harness's own --log-format. */
function start(world: World, name: string, extra: string[], o: Partial<WorldAgentOptions> = {}): Started {
  const agent = startAgent(agentArgs(world, name, extra, o));
  let stdout = '';
  let stderr = '';
  agent.child.stdout?.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  agent.child.stderr?.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  return { agent, stdout: () => stdout, stderr: () => stderr };
}

async function stop(agent: RunningAgent): Promise<number | string> {
  if (agent.child.exitCode === null && agent.child.signalCode === null) agent.child.kill('SIGTERM');
  return agent.exited;
}

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '');
}

/** `<dev>:<inode>` of an open file, as systemd writes JOURNAL_STREAM. */
function devIno(fd: number): string {
  const st = fstatSync(fd, { bigint: true });
  return `${st.dev}:${st.ino}`;
}

interface FileAgent {
  child: ChildProcess;
  exited: Promise<number | string>;
}

/**
 * The built agent with stdout and stderr on files (`out` and `err` may be the
 * same file: systemd's usual journal stream for both), and JOURNAL_STREAM set
 * to what `journal` names, or unset, even if this test runs under journald.
 */
function startToFiles(args: string[], out: string, err: string, journal: (fds: { out: number; err: number }) => string | null): FileAgent {
  const outFd = openSync(out, 'a');
  const errFd = err === out ? outFd : openSync(err, 'a');
  const env = cleanEnv();
  delete env.JOURNAL_STREAM;
  const named = journal({ out: outFd, err: errFd });
  if (named !== null) env.JOURNAL_STREAM = named;
  const child = spawn(process.execPath, [AGENT_MAIN, ...args], { env, stdio: ['ignore', outFd, errFd] });
  // The child holds its own copies.
  closeSync(outFd);
  if (errFd !== outFd) closeSync(errFd);
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  return { child, exited };
}

function fileText(path: string): string {
  return existsSync(path) ? readFileSync(path, 'utf8') : '';
}

async function waitForFile(path: string, pattern: RegExp, agent: FileAgent, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!pattern.test(fileText(path))) {
    if (agent.child.exitCode !== null || agent.child.signalCode !== null)
      throw new Error(`agent exited before ${path} showed ${pattern}:\n${fileText(path)}`);
    if (Date.now() > until) throw new Error(`${path} did not show ${pattern} within ${timeoutMs} ms:\n${fileText(path)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function stopFileAgent(agent: FileAgent): Promise<number | string> {
  if (agent.child.exitCode === null && agent.child.signalCode === null) agent.child.kill('SIGTERM');
  return agent.exited;
}

describe('the built agent logs', () => {
  let world: World;
  let running: RunningAgent | null = null;

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterEach(async () => {
    if (running) await stop(running);
    running = null;
    world.cp.setDefault('heartbeat', null);
  });
  afterAll(async () => {
    await world.close();
  });

  it('writes one JSON object per line by default when stdout is not a terminal, with time, level, context and message', async () => {
    const s = start(world, 'state-json', []);
    running = s.agent;
    await s.agent.waitForOutput(/heartbeat every 1 s/);
    // One failed heartbeat makes a warning, the next success an info line.
    world.cp.respondNext('heartbeat', { status: 503, body: { error: 'maintenance' } });
    await s.agent.waitForOutput(/heartbeat succeeded again/, 20_000);
    expect(await stop(s.agent)).toBe(0);

    const out = lines(s.stdout());
    const all = [...out, ...lines(s.stderr())];
    expect(out.length).toBeGreaterThan(3);
    // Not journald's stream: no priority prefix, pure JSON.
    for (const line of all) expect(line.startsWith('{')).toBe(true);
    const entries = all.map((line) => {
      let parsed: unknown;
      expect(() => (parsed = JSON.parse(line) as unknown)).not.toThrow();
      return parsed as Record<string, unknown>;
    });
    for (const e of entries) {
      expect(Object.keys(e).filter((k) => !KEYS.includes(k))).toEqual([]);
      expect(e.time).toMatch(RFC3339);
      expect(Number.isNaN(Date.parse(String(e.time)))).toBe(false);
      expect(LEVELS).toContain(e.level);
      expect(typeof e.context).toBe('string');
      expect(e.context).not.toBe('');
      expect(typeof e.message).toBe('string');
      if ('fields' in e) expect(typeof e.fields).toBe('object');
    }
    expect(entries).toContainEqual(
      expect.objectContaining({
        level: 'warn',
        context: 'HeartbeatService',
        message: expect.stringMatching(/^heartbeat to the control plane failed: HTTP 503/),
        // The CP's answer as values, not only inside the sentence.
        fields: expect.objectContaining({ failure: 'http-status', status: 503, consecutiveFailures: 1 }),
      }),
    );
    expect(entries).toContainEqual(
      expect.objectContaining({ level: 'info', context: 'Bootstrap', message: expect.stringMatching(/ started for web-01; /) }),
    );
    expect(entries).toContainEqual(expect.objectContaining({ level: 'info', context: 'Shutdown', message: 'stopped cleanly' }));
  });

  it('prints no key material and no PEM, whatever it logs', async () => {
    const s = start(world, 'state-secrets', ['--log-level', 'verbose']);
    running = s.agent;
    const before = world.cp.heartbeats.length;
    await s.agent.waitForOutput(/heartbeat every 1 s/);
    // Verbose logging through a few heartbeats, each with its TLS handshake.
    await world.cp.waitFor(() => world.cp.heartbeats.length >= before + 3, 10_000, 'three heartbeats');
    await stop(s.agent);

    const printed = s.stdout() + s.stderr();
    expect(printed).not.toMatch(/-----BEGIN /);
    const keyBody = readFileSync(world.pki.client.keyPath, 'utf8')
      .split('\n')
      .filter((l) => l.length > 20 && !l.startsWith('-----'));
    expect(keyBody.length).toBeGreaterThan(0);
    for (const line of keyBody) expect(printed).not.toContain(line);
  });

  it('prints readable text lines with --log-format text', async () => {
    const s = start(world, 'state-text', ['--log-format', 'text']);
    running = s.agent;
    await s.agent.waitForOutput(/heartbeat every 1 s/);
    expect(await stop(s.agent)).toBe(0);

    const out = lines(s.stdout());
    expect(out.length).toBeGreaterThan(3);
    for (const line of out) {
      expect(line).toMatch(TEXT_LINE);
      expect(line).not.toMatch(/^\{/);
      // ISO 8601 UTC, as in JSON and everywhere else, not Nest's locale time; and close to now.
      const time = TEXT_TIME.exec(line)?.[1];
      expect(time).toBeDefined();
      expect(Math.abs(Date.parse(String(time)) - Date.now())).toBeLessThan(60_000);
    }
    expect(out.some((l) => /LOG \[HeartbeatService\] heartbeat every 1 s/.test(l))).toBe(true);
    // No terminal, no colour codes.
    expect(s.stdout()).not.toContain('\u001b[');
  });
});

describe('the built agent under journald', () => {
  let world: World;
  let running: FileAgent | null = null;

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterEach(async () => {
    if (running) await stopFileAgent(running);
    running = null;
  });
  afterAll(async () => {
    await world.close();
  });

  const dispatch = (rolloutId: string): void =>
    world.cp.queueDispatch(world.pki.machineId, {
      rollout_id: rolloutId,
      target_closure: TARGET,
      soak_due_at: new Date(Date.now() + 60_000).toISOString(),
    });

  it('starts every JSON line with the syslog priority of its level when stdout and stderr are the JOURNAL_STREAM', async () => {
    const file = join(world.dir, 'journal.log');
    // The first event POST refused with 403: an error (delivery paused), a warning (the retry), then info (works again).
    world.cp.respondNext('events', { status: 403, body: { error: 'forbidden' } });
    running = startToFiles(
      agentArgs(world, 'state-journal', ['--log-level', 'debug'], { symlinkActivation: true }),
      file,
      file,
      ({ out }) => devIno(out),
    );
    await waitForFile(file, /heartbeat every 1 s/, running);
    dispatch('journal@a1b2c3d4');
    await waitForFile(file, /event delivery works again/, running, 20_000);
    expect(await stopFileAgent(running)).toBe(0);

    const all = lines(fileText(file));
    const priorities = new Set<number>();
    for (const line of all) {
      const m = /^<(\d)>(\{.*\})$/.exec(line);
      expect(m).not.toBeNull();
      const entry = JSON.parse(String(m?.[2])) as JsonLogEntry;
      expect(Number(m?.[1])).toBe(PRIORITY[entry.level]);
      priorities.add(Number(m?.[1]));
    }
    expect([...priorities].sort()).toEqual([3, 4, 6, 7]);
    expect(all).toContainEqual(expect.stringMatching(/^<3>\{.*"message":"event delivery paused: HTTP 403/));
    expect(all).toContainEqual(
      expect.stringMatching(/^<4>\{.*"message":"delivering DispatchAck seq 1 of journal@a1b2c3d4 failed: HTTP 403/),
    );
    expect(all).toContainEqual(expect.stringMatching(/^<6>\{.*"message":"stopped cleanly"/));
  });

  it('prefixes text lines on the stream that is the journal only, and prints ISO 8601 UTC times', async () => {
    const out = join(world.dir, 'text-out.log');
    const err = join(world.dir, 'text-err.log');
    // StandardOutput=journal, StandardError=file: only stdout is the JOURNAL_STREAM.
    world.cp.respondNext('events', { status: 403, body: { error: 'forbidden' } });
    running = startToFiles(agentArgs(world, 'state-text', ['--log-format', 'text'], { symlinkActivation: true }), out, err, (fds) =>
      devIno(fds.out),
    );
    await waitForFile(out, /heartbeat every 1 s/, running);
    dispatch('text@a1b2c3d4');
    await waitForFile(err, /event delivery paused/, running, 20_000);
    await waitForFile(out, /event delivery works again/, running, 20_000);
    expect(await stopFileAgent(running)).toBe(0);

    const stdout = lines(fileText(out));
    expect(stdout.length).toBeGreaterThan(3);
    for (const line of stdout) {
      const m = /^<(\d)>\[nixfleet-agent\] \d+ {2}- \S+ +([A-Z]+) \[/.exec(line);
      expect(m).not.toBeNull();
      expect(Number(m?.[1])).toBe(TEXT_PRIORITY[String(m?.[2])]);
      expect(line).toMatch(TEXT_TIME);
    }
    const stderr = lines(fileText(err));
    expect(stderr.length).toBeGreaterThan(0);
    for (const line of stderr) expect(line.startsWith('<')).toBe(false);
    expect(stderr).toContainEqual(
      expect.stringMatching(
        /ERROR \[DrainerService\] event delivery paused: HTTP 403.* rolloutId=text@a1b2c3d4 seq=1 kind=DispatchAck failure=http-status status=403$/,
      ),
    );
  });

  it('says a configuration error as an error to journald too: every line <3>, exit 2', async () => {
    const err = join(world.dir, 'config-error.log');
    const agent = startToFiles(agentArgs(world, 'state-bad', ['--heartbeat-interval', '0']), err, err, ({ err: fd }) => devIno(fd));
    expect(await agent.exited).toBe(2);

    const printed = lines(fileText(err));
    expect(printed.length).toBeGreaterThan(1);
    for (const line of printed) expect(line).toMatch(/^<3>\S/);
    expect(printed.join('\n')).toMatch(/--heartbeat-interval/);
  });

  it('writes no prefix when JOURNAL_STREAM names another file, or is unset', async () => {
    for (const [name, named] of [
      [
        'other',
        (): string => {
          const fd = openSync(join(world.dir, 'not-the-output'), 'a');
          try {
            return devIno(fd);
          } finally {
            closeSync(fd);
          }
        },
      ],
      ['unset', (): null => null],
    ] as const) {
      const out = join(world.dir, `plain-${name}-out.log`);
      const err = join(world.dir, `plain-${name}-err.log`);
      running = startToFiles(agentArgs(world, `state-plain-${name}`, []), out, err, named);
      await waitForFile(out, /heartbeat every 1 s/, running);
      expect(await stopFileAgent(running)).toBe(0);
      running = null;
      const printed = [...lines(fileText(out)), ...lines(fileText(err))];
      expect(printed.length).toBeGreaterThan(3);
      for (const line of printed) expect(() => JSON.parse(line) as unknown).not.toThrow();
    }
  });
});

describe('the built agent logs a rollout with fields', () => {
  let world: World;
  let running: RunningAgent | null = null;

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterAll(async () => {
    if (running) await stop(running);
    await world.close();
  });

  it('says each state change once, Soaking and Converged included, and a refused event, with their fields', async () => {
    const rolloutId = 'fields@a1b2c3d4';
    const s = start(world, 'state-fields', [], { symlinkActivation: true });
    running = s.agent;
    await s.agent.waitForOutput(/heartbeat every 1 s/);
    // The CP judges the first event (DispatchAck) invalid: refused, kept on record, delivery goes on.
    world.cp.respondNext('events', { status: 400, body: { error: 'invalid_event' } });
    const soakDueAt = new Date(Date.now() + 2_000).toISOString();
    world.cp.queueDispatch(world.pki.machineId, { rollout_id: rolloutId, target_closure: TARGET, soak_due_at: soakDueAt });
    await world.cp.waitFor(
      () => world.cp.events(world.pki.machineId, rolloutId).some((e) => e.kind === 'Converged'),
      20_000,
      'the Converged event',
    );
    expect(await stop(s.agent)).toBe(0);
    running = null;

    const entries = logLines(s.agent);
    const changes = entries.filter((e) => e.context === 'ReducerService' && e.fields?.rolloutId === rolloutId && 'to' in (e.fields ?? {}));
    expect(changes.map((e) => [e.level, e.fields?.from, e.fields?.to])).toEqual([
      ['info', null, 'Activating'],
      ['info', 'Activating', 'Soaking'],
      ['info', 'Soaking', 'Converged'],
    ]);
    const [activating, soaking, converged] = changes;
    expect(activating.message).toBe(`rollout ${rolloutId}: Activating ${TARGET}`);
    expect(activating.fields).toEqual({ rolloutId, from: null, to: 'Activating', closure: TARGET, seq: 1, source: 'agent' });
    expect(soaking.message).toMatch(new RegExp(`^rollout ${rolloutId}: Soaking since \\S+, soak due at ${soakDueAt}$`));
    expect(soaking.fields).toEqual({
      rolloutId,
      from: 'Activating',
      to: 'Soaking',
      closure: TARGET,
      soakingSince: expect.stringMatching(RFC3339) as unknown,
      soakDueAt,
      seq: 3,
      source: 'agent',
    });
    expect(converged.fields).toEqual({ rolloutId, from: 'Soaking', to: 'Converged', closure: TARGET, seq: 5, source: 'agent' });

    const refused = entries.filter((e) => e.context === 'DrainerService' && e.level === 'warn');
    expect(refused).toEqual([
      expect.objectContaining({
        message: expect.stringMatching(
          new RegExp(`^the control plane refused event DispatchAck seq 1 of ${rolloutId} \\(HTTP 400`),
        ) as unknown,
        fields: { rolloutId, seq: 1, kind: 'DispatchAck', status: 400 },
      }),
    ]);
    expect(entries).toContainEqual(
      expect.objectContaining({
        context: 'DispatchWorker',
        message: expect.stringMatching(/^dispatch received: /) as unknown,
        fields: { rolloutId, closure: TARGET, soakDueAt },
      }),
    );
    expect(entries).toContainEqual(
      expect.objectContaining({
        context: 'ActivationService',
        message: expect.stringMatching(/^switch of .* started \(symlink: /) as unknown,
        fields: expect.objectContaining({ rolloutId, closure: TARGET, activation: 'switch', backend: 'symlink' }) as unknown,
      }),
    );
  });
});
