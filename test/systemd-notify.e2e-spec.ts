import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createSocket, type UnixDgramSocket } from 'unix-dgram';
import type { ReceivedRequest } from '../dev/control-plane';
import { makeWorld, type World } from './support/agent-harness';
import { exitWithin, killIfRunning, logLines, type RunningAgent, startAgent, worldAgentArgs } from './support/agent-process';

interface Datagram {
  text: string;
  /** performance.now() at arrival. */
  at: number;
}

/** A real unix datagram socket in a temp dir, standing in for systemd's notify socket. */
class FakeSystemd {
  readonly received: Datagram[] = [];
  /** Runs as each datagram arrives, to capture what else was true at that moment. */
  onDatagram: ((d: Datagram) => void) | null = null;
  private readonly socket: UnixDgramSocket;
  private readonly waiters = new Set<() => void>();
  private error: Error | null = null;

  constructor(readonly path: string) {
    this.socket = createSocket('unix_dgram', (buf) => {
      const d = { text: buf.toString('utf8'), at: performance.now() };
      this.received.push(d);
      this.onDatagram?.(d);
      for (const w of this.waiters) w();
    });
    this.socket.on('error', (err: Error) => {
      this.error = err;
    });
    this.socket.bind(path);
    if (this.error) throw this.error;
  }

  texts(): string[] {
    return this.received.map((d) => d.text);
  }

  waitFor(what: string, accept: (received: Datagram[]) => boolean, agent: RunningAgent, timeoutMs = 20_000): Promise<Datagram[]> {
    return new Promise((resolve, reject) => {
      const done = (fn: () => void): void => {
        this.waiters.delete(check);
        clearTimeout(timer);
        agent.child.off('exit', check);
        fn();
      };
      const check = (): void => {
        if (accept(this.received)) done(() => resolve(this.received));
        else if (agent.child.exitCode !== null || agent.child.signalCode !== null) {
          done(() =>
            reject(new Error(`agent exited before ${what}; datagrams: ${JSON.stringify(this.texts())}; output:\n${agent.output()}`)),
          );
        }
      };
      const timer = setTimeout(
        () =>
          done(() =>
            reject(new Error(`no ${what} within ${timeoutMs} ms; datagrams: ${JSON.stringify(this.texts())}; output:\n${agent.output()}`)),
          ),
        timeoutMs,
      );
      this.waiters.add(check);
      agent.child.on('exit', check);
      check();
    });
  }

  close(): void {
    this.socket.close();
  }
}

const isReady = (d: Datagram): boolean => d.text.split('\n').includes('READY=1');
const isWatchdog = (d: Datagram): boolean => d.text.split('\n').includes('WATCHDOG=1');
const isStopping = (d: Datagram): boolean => d.text.split('\n').includes('STOPPING=1');
const statusLines = (ds: Datagram[]): string[] =>
  ds
    .flatMap((d) => d.text.split('\n'))
    .filter((l) => l.startsWith('STATUS='))
    .map((l) => l.slice('STATUS='.length));

/** Warnings and errors the agent logged about notifying systemd. */
function problems(agent: RunningAgent): string[] {
  return logLines(agent)
    .filter((l) => l.level === 'warn' || l.level === 'error' || l.level === 'fatal')
    .filter((l) => l.context === 'NotifyService' || l.context === 'NotifySocket')
    .map((l) => `${l.context}: ${l.message}`);
}

describe('sd_notify: the built agent talks to a real unix datagram socket as it would to systemd', () => {
  const SYSTEMD_ENV = ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID'] as const;
  const inherited = new Map<string, string | undefined>();
  let world: World;
  let systemd: FakeSystemd | null = null;
  let agent: RunningAgent | null = null;
  let n = 0;

  beforeAll(async () => {
    // A test runner that itself runs under systemd must not hand its own socket or watchdog to the agents.
    for (const name of SYSTEMD_ENV) {
      inherited.set(name, process.env[name]);
      delete process.env[name];
    }
    world = await makeWorld();
  });
  afterEach(async () => {
    world.cp.setDefault('heartbeat', null);
    await killIfRunning(agent);
    agent = null;
    systemd?.close();
    systemd = null;
  });
  afterAll(async () => {
    await world.close();
    for (const [name, value] of inherited) if (value !== undefined) process.env[name] = value;
  });

  function start(env: Record<string, string>): RunningAgent {
    n += 1;
    // A unix admin socket: no TCP port to race other suites for.
    const args = worldAgentArgs(world, {
      stateDir: join(world.dir, `state-${n}`),
      adminListen: `unix:${join(world.dir, `admin-${n}.sock`)}`,
    });
    agent = startAgent(args, env);
    return agent;
  }

  function listen(): FakeSystemd {
    systemd = new FakeSystemd(join(world.dir, `notify-${n + 1}.sock`));
    return systemd;
  }

  it('READY=1 (with STATUS=) first, then WATCHDOG=1 at about half of WATCHDOG_USEC; on SIGTERM STOPPING=1 before the shutdown work, then exit 0', async () => {
    const sd = listen();
    const a = start({ NOTIFY_SOCKET: sd.path, WATCHDOG_USEC: '2000000' });
    const from = world.cp.heartbeats.length;

    await sd.waitFor('READY=1', (ds) => ds.some(isReady), a);
    const ready = sd.received.find(isReady)!;
    expect(ready.text).toMatch(/^READY=1\nSTATUS=heartbeat ok \d+ s ago; no events pending$/);

    // Pings every 1 s: a few seconds bring several, and none came before READY=1.
    await sd.waitFor('3 WATCHDOG=1', (ds) => ds.filter(isWatchdog).length >= 3, a, 10_000);
    const firstPing = sd.received.findIndex(isWatchdog);
    expect(sd.received.indexOf(ready)).toBeLessThan(firstPing);
    expect(sd.received.slice(0, firstPing).filter(isWatchdog)).toEqual([]);
    const within4s = sd.received.filter((d) => isWatchdog(d) && d.at - ready.at <= 4000);
    expect(within4s.length).toBeGreaterThanOrEqual(2);
    expect(within4s.length).toBeLessThanOrEqual(8); // half the period, not a busy loop
    expect(sd.received.every((d) => d.text === 'WATCHDOG=1' || d.text.includes('STATUS='))).toBe(true);
    // The boot handshake's own line may come first; the steady one says the heartbeat is fine.
    expect(statusLines(sd.received)).toContainEqual(expect.stringMatching(/^heartbeat ok \d+ s ago; no events pending$/));

    // A heartbeat held by the CP keeps HeartbeatService's shutdown waiting for seconds: STOPPING=1 must not wait with it.
    await world.cp.waitFor(() => world.cp.heartbeats.slice(from).filter((h) => h.status === 200).length >= 2, 10_000, '2 heartbeats');
    world.cp.respondNext('heartbeat', { delayMs: 3000 });
    const slow: ReceivedRequest = await world.cp.waitFor(
      () => world.cp.heartbeats.slice(from).find((h) => h.scripted),
      5000,
      'the held heartbeat',
    );
    let atStopping: { heartbeatAnswered: boolean; agentRunning: boolean } | null = null;
    sd.onDatagram = (d) => {
      if (isStopping(d)) atStopping = { heartbeatAnswered: slow.status !== null, agentRunning: a.child.exitCode === null };
    };
    a.child.kill('SIGTERM');

    expect(await exitWithin(a, 15_000)).toBe(0);
    const stopping = sd.received.filter(isStopping);
    expect(stopping.map((d) => d.text)).toEqual(['STOPPING=1\nSTATUS=stopping: finishing in-flight work']);
    expect(atStopping).toEqual({ heartbeatAnswered: false, agentRunning: true });
    expect(slow.status).toBe(200);
    // Nothing after STOPPING=1: the timers were cleared first.
    expect(sd.received.at(-1)).toBe(stopping[0]);
    expect(a.output()).toContain('stopped cleanly');
    expect(problems(a)).toEqual([]);
  }, 45_000);

  it('sends no WATCHDOG=1 when WATCHDOG_PID names another process, but READY=1 and STOPPING=1 still', async () => {
    const sd = listen();
    // Pings would come every 250 ms if they were meant for the agent.
    const a = start({ NOTIFY_SOCKET: sd.path, WATCHDOG_USEC: '500000', WATCHDOG_PID: String(process.pid) });

    await sd.waitFor('READY=1', (ds) => ds.some(isReady), a);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(sd.received.filter(isWatchdog)).toEqual([]);

    a.child.kill('SIGTERM');
    expect(await exitWithin(a, 15_000)).toBe(0);
    expect(sd.received.filter(isWatchdog)).toEqual([]);
    expect(sd.received.filter(isStopping)).toHaveLength(1);
    expect(problems(a)).toEqual([]);
  });

  it('runs and stops cleanly without NOTIFY_SOCKET (not started by systemd)', async () => {
    const sd = listen();
    // Empty is unset (sd_notify(3)); WATCHDOG_USEC alone means nothing without a socket.
    const a = start({ NOTIFY_SOCKET: '', WATCHDOG_USEC: '500000' });
    const from = world.cp.heartbeats.length;

    await a.waitForOutput(/started for/);
    await world.cp.waitFor(() => world.cp.heartbeats.slice(from).filter((h) => h.status === 200).length >= 2, 10_000, '2 heartbeats');
    a.child.kill('SIGTERM');
    expect(await exitWithin(a, 15_000)).toBe(0);
    expect(a.output()).toContain('stopped cleanly');
    expect(sd.received).toEqual([]);
    expect(problems(a)).toEqual([]);
  });
});
