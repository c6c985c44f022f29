import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeWorld, type World } from './support/agent-harness';
import { type RunningAgent, startAgent, worldAgentArgs } from './support/agent-process';

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'verbose'];
const KEYS = ['time', 'level', 'context', 'message', 'fields', 'stack'];
/** Nest's readable line: `[prefix] pid  - date, time   LEVEL [Context] message`. */
const TEXT_LINE = /^\[nixfleet-agent\] \d+ {2}- \S.* +(LOG|WARN|ERROR|DEBUG|VERBOSE|FATAL) \[[^\]]+\] \S/;

interface Started {
  agent: RunningAgent;
  stdout: () => string;
  stderr: () => string;
}

/** The built agent with the test's flags, minus the harness's own --log-format. */
function start(world: World, name: string, extra: string[]): Started {
  const args = worldAgentArgs(world, { stateDir: join(world.dir, name), adminListen: `unix:${join(world.dir, `${name}.sock`)}` });
  const at = args.indexOf('--log-format');
  if (at >= 0) args.splice(at, 2);
  const agent = startAgent([...args, ...extra]);
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
    }
    expect(out.some((l) => /LOG \[HeartbeatService\] heartbeat every 1 s/.test(l))).toBe(true);
    // No terminal, no colour codes.
    expect(s.stdout()).not.toContain('\u001b[');
  });
});
