import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { INestApplication } from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { Test } from '@nestjs/testing';
import { createSocket, type UnixDgramSocket } from 'unix-dgram';
import { CapturingLogger } from '../../test/support/agent-harness';
import { FakeClock } from '../../test/support/fake-clock';
import { CLOCK } from '../clock/clock';
import { ClockModule } from '../clock/clock.module';
import { Uptime } from '../clock/uptime';
import { type AgentConfig, loadConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { type HealthCheck, HealthService, type Liveness, type Readiness } from '../health/health.service';
import { type HeartbeatProgress, HeartbeatService, type HeartbeatStatus } from '../heartbeat/heartbeat.service';
import { JobsModule } from '../jobs/jobs.module';
import { BootGate } from '../lifecycle/boot-gate';
import { LifecycleModule } from '../lifecycle/lifecycle.module';
import { EventLogService, type EventLogWriteHealth } from '../outbound/event-log.service';
import { ReducerService } from '../reducer/reducer.service';
import type { ReducerState, RolloutEntry } from '../reducer/reducer.types';
import { AgentSummary } from './agent-summary';
import { NotifyService } from './notify.service';
import { NotifySocket } from './notify.socket';
import { STATUS_INTERVAL_NAME, WATCHDOG_INTERVAL_NAME } from './systemd.constants';

/** A real unix datagram socket standing in for systemd's notify socket. */
class FakeSystemd {
  readonly messages: string[] = [];
  private readonly socket: UnixDgramSocket;
  private readonly waiters = new Set<() => void>();

  constructor(readonly path: string) {
    this.socket = createSocket('unix_dgram', (buf) => {
      this.messages.push(buf.toString('utf8'));
      for (const w of this.waiters) w();
    });
    this.socket.on('error', (err: Error) => {
      throw err;
    });
    this.socket.bind(path);
  }

  /** Resolves once `count` datagrams in all have arrived. */
  waitForCount(count: number, timeoutMs = 2000): Promise<string[]> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.messages.length < count) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(this.messages);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`expected ${count} datagram(s) within ${timeoutMs} ms, got ${JSON.stringify(this.messages)}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /**
   * Unix datagrams arrive in order: once a marker sent after `fn` is here,
   * everything `fn` sent is here too, and nothing more is in flight.
   */
  async settle(fn: () => void): Promise<string[]> {
    const before = this.messages.length;
    fn();
    const marker = `MARKER=${before}`;
    const probe = createSocket('unix_dgram');
    const buf = Buffer.from(marker);
    probe.send(buf, 0, buf.length, this.path);
    probe.close();
    await new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (!this.messages.includes(marker)) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => reject(new Error(`marker never arrived: ${JSON.stringify(this.messages)}`)), 2000);
      this.waiters.add(check);
      check();
    });
    const sent = this.messages.slice(before, this.messages.indexOf(marker));
    this.messages.splice(this.messages.indexOf(marker), 1);
    return sent;
  }

  close(): void {
    this.socket.close();
  }
}

/** What the stand-ins return; tests change it between ticks. */
interface World {
  checks: HealthCheck[];
  readiness: Readiness;
  eventLog: EventLogWriteHealth;
  pending: number;
  rollouts: Record<string, RolloutEntry>;
}

const LIVE: HealthCheck[] = [
  { name: 'event-loop', ok: true, detail: 'responsive' },
  { name: 'boot', ok: true, detail: 'boot recovery done' },
  { name: 'heartbeat-job', ok: true, detail: 'attempting on schedule' },
  { name: 'reducer', ok: true, detail: 'queue empty' },
];

const WEDGED: HealthCheck[] = LIVE.map((c) =>
  c.name === 'heartbeat-job' ? { ...c, ok: false, detail: 'a heartbeat has been in flight for 21 s, past its 10 s deadline' } : c,
);

function configWith(env: Record<string, string>): AgentConfig {
  const loaded = loadConfig({
    argv: ['--control-plane-url', 'https://cp.example.test', '--machine-id', 'web-01'],
    env,
    stdoutIsTty: false,
    pid: 4242,
  });
  if (loaded.kind !== 'run') throw new Error(`config is invalid: ${JSON.stringify(loaded)}`);
  return loaded.config;
}

describe('NotifyService, against a real unix datagram socket', () => {
  let dir: string;
  let systemd: FakeSystemd;
  let app: INestApplication | null = null;
  let world: World;
  let clock: FakeClock;
  let scheduler: SchedulerRegistry;
  let failingSinceMono = 0;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-notify-'));
    systemd = new FakeSystemd(join(dir, 'notify'));
    clock = new FakeClock();
    world = {
      checks: LIVE,
      readiness: {
        ok: true,
        reachable: true,
        lastSuccessAt: clock.now().toISOString(),
        failingForSecs: null,
        consecutiveFailures: 0,
        lastError: null,
        thresholdSecs: 180,
        eventLog: { writable: true, failingSince: null, lastError: null },
      },
      eventLog: {
        path: '/state/events.log',
        failingSince: null,
        failuresInStreak: 0,
        failuresTotal: 0,
        lastError: null,
        refusingWrites: null,
        clearedBy: null,
      },
      pending: 0,
      rollouts: {},
    };
  });

  afterEach(async () => {
    await app?.close();
    app = null;
    systemd.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function start(env: Record<string, string>): Promise<{ notify: NotifyService; gate: BootGate; logs: CapturingLogger }> {
    const startedMono = clock.monotonicMs();
    const health: Pick<HealthService, 'liveness' | 'readiness'> = {
      liveness: (): Liveness => ({ ok: world.checks.every((c) => c.ok), checks: world.checks }),
      readiness: () => world.readiness,
    };
    const heartbeat: Pick<HeartbeatService, 'status' | 'progress'> = {
      status: (): HeartbeatStatus => ({
        intervalSecs: 60,
        lastAttemptAt: null,
        lastSuccessAt: world.readiness.lastSuccessAt,
        lastError: world.readiness.lastError === null ? null : { kind: 'http-status', message: world.readiness.lastError, at: '' },
        consecutiveFailures: world.readiness.consecutiveFailures,
        failingSince: null,
        nextDueAt: null,
        lastReplayFrom: null,
        clockSkewSecs: null,
        inFlight: false,
        skippedTicks: 0,
        recentOutcomes: [],
      }),
      progress: (): HeartbeatProgress => ({
        startedMono,
        lastAttemptMono: startedMono,
        lastSuccessMono: world.readiness.reachable ? startedMono : null,
        nextDueMono: startedMono + 60_000,
        inFlightSinceMono: null,
        intervalMs: 60_000,
        deadlineMs: 10_000,
      }),
    };
    const eventLog: Pick<EventLogService, 'writeHealth' | 'failingForSecs'> & { stats: () => { pending: number } } = {
      stats: () => ({ pending: world.pending }),
      writeHealth: () => world.eventLog,
      // The streak's length as the real service measures it: on the monotonic clock, from when it began.
      failingForSecs: () => (world.eventLog.failingSince === null ? null : (clock.monotonicMs() - failingSinceMono) / 1000),
    };
    const reducer: Pick<ReducerService, 'current'> = { current: (): ReducerState => ({ rollouts: world.rollouts }) };

    const logs = new CapturingLogger();
    const moduleRef = await Test.createTestingModule({
      // The runtime takes the clock from the global ClockModule; the override gives it the same fake one.
      imports: [ClockModule, JobsModule, LifecycleModule],
      providers: [
        NotifyService,
        NotifySocket,
        AgentSummary,
        // BootGate comes from LifecycleModule, the one JobsModule imports too: one gate for the service and the runtime.
        Uptime,
        { provide: AGENT_CONFIG, useValue: configWith(env) },
        { provide: CLOCK, useValue: clock },
        { provide: HealthService, useValue: health },
        { provide: HeartbeatService, useValue: heartbeat },
        { provide: EventLogService, useValue: eventLog },
        { provide: ReducerService, useValue: reducer },
      ],
    })
      .overrideProvider(CLOCK)
      .useValue(clock)
      .setLogger(logs)
      .compile();
    app = moduleRef.createNestApplication({ logger: logs });
    await app.init();
    scheduler = app.get(SchedulerRegistry);
    return { notify: app.get(NotifyService), gate: app.get(BootGate), logs };
  }

  // The jobs' timers: the runtime keeps one timeout per job in the registry, armed for its next due time.
  const intervals = (): string[] => [...scheduler.getIntervals(), ...scheduler.getTimeouts()].sort();

  it('sends STATUS= during the boot handshake, and READY=1 with a STATUS= line only once the boot gate opens', async () => {
    world.pending = 2;
    const { gate } = await start({ NOTIFY_SOCKET: systemd.path });
    expect(await systemd.waitForCount(1)).toEqual([
      'STATUS=boot recovery: waiting for the handshake with the control plane (0 s); 2 events pending',
    ]);

    world.rollouts = { r: { state: 'Soaking' } as RolloutEntry };
    clock.advance(12_000);
    gate.open({ reachedControlPlane: true });
    expect((await systemd.waitForCount(2))[1]).toBe('READY=1\nSTATUS=heartbeat ok 12 s ago; 2 events pending; 1 rollout Soaking');
  });

  it('never sends WATCHDOG=1 before READY=1', async () => {
    const { notify } = await start({ NOTIFY_SOCKET: systemd.path, WATCHDOG_USEC: '60000000' });
    await systemd.waitForCount(1);
    const sent = await systemd.settle(() => {
      notify.watchdogTick();
      notify.watchdogTick();
    });
    expect(sent).toEqual([]);
    expect(intervals()).toEqual([STATUS_INTERVAL_NAME]);
  });

  it('pings WATCHDOG=1 while live; withholds it while a liveness check fails, warning once per episode', async () => {
    const { notify, gate, logs } = await start({ NOTIFY_SOCKET: systemd.path, WATCHDOG_USEC: '60000000' });
    gate.open({ reachedControlPlane: true });
    await systemd.waitForCount(2);
    expect(intervals()).toEqual([STATUS_INTERVAL_NAME, WATCHDOG_INTERVAL_NAME].sort());

    expect(await systemd.settle(() => notify.watchdogTick())).toEqual(['WATCHDOG=1']);

    world.checks = WEDGED;
    const whileWedged = await systemd.settle(() => {
      for (let i = 0; i < 5; i++) {
        clock.advance(30_000);
        notify.watchdogTick();
      }
    });
    expect(whileWedged.filter((m) => m.includes('WATCHDOG=1'))).toEqual([]);
    // The STATUS= line says why, once.
    expect(whileWedged).toEqual([
      expect.stringMatching(/^STATUS=NOT LIVE, watchdog pings withheld: heartbeat-job: a heartbeat has been in flight/),
    ]);
    const warned = logs.messages('warn', NotifyService.name);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatch(
      /liveness check failed: heartbeat-job \(a heartbeat has been in flight for 21 s.*WATCHDOG=1 is withheld.*within 60 s/,
    );

    world.checks = LIVE;
    const recovered = await systemd.settle(() => notify.watchdogTick());
    expect(recovered).toEqual([expect.stringMatching(/^STATUS=heartbeat ok/), 'WATCHDOG=1']);
    expect(logs.messages('log', NotifyService.name)).toContainEqual(expect.stringMatching(/live again \(was failing: heartbeat-job\)/));

    // A second episode is warned about again.
    world.checks = WEDGED;
    await systemd.settle(() => notify.watchdogTick());
    expect(logs.messages('warn', NotifyService.name)).toHaveLength(2);
  });

  it('sends no WATCHDOG=1 at all when WATCHDOG_USEC is meant for another process', async () => {
    const { notify, gate } = await start({ NOTIFY_SOCKET: systemd.path, WATCHDOG_USEC: '2000000', WATCHDOG_PID: '1' });
    gate.open({ reachedControlPlane: true });
    await systemd.waitForCount(2);
    expect(intervals()).toEqual([STATUS_INTERVAL_NAME]);
    expect(await systemd.settle(() => notify.watchdogTick())).toEqual([]);
  });

  it('re-sends STATUS= only when its text changed', async () => {
    const { notify, gate } = await start({ NOTIFY_SOCKET: systemd.path });
    gate.open({ reachedControlPlane: true });
    await systemd.waitForCount(2);
    expect(await systemd.settle(() => notify.statusTick())).toEqual([]);

    world.readiness = {
      ...world.readiness,
      ok: false,
      reachable: false,
      failingForSecs: 185,
      consecutiveFailures: 4,
      lastError: 'HTTP 503: unavailable',
    };
    world.pending = 4;
    expect(await systemd.settle(() => notify.statusTick())).toEqual([
      'STATUS=control plane unreachable for 3 min (HTTP 503); 4 events pending',
    ]);
  });

  it('says at once, first, that event-log writes fail, and stops saying it once they work', async () => {
    const { notify, gate } = await start({ NOTIFY_SOCKET: systemd.path });
    gate.open({ reachedControlPlane: true });
    await systemd.waitForCount(2);

    const since = clock.now().toISOString();
    failingSinceMono = clock.monotonicMs();
    clock.advance(42_000);
    const cause = 'ENOSPC: no space left on device, write';
    world.eventLog = {
      ...world.eventLog,
      failingSince: since,
      failuresInStreak: 2,
      failuresTotal: 2,
      lastError: { message: `event log /state/events.log: append of 1 event(s) failed (${cause})`, cause, code: 'ENOSPC', at: since },
    };
    world.readiness = { ...world.readiness, ok: false, eventLog: { writable: false, failingSince: since, lastError: cause } };
    expect(await systemd.settle(() => notify.statusTick())).toEqual([
      'STATUS=DEGRADED: event log writes failing for 42 s (ENOSPC); heartbeat ok 42 s ago; no events pending',
    ]);

    world.eventLog = { ...world.eventLog, failingSince: null, failuresInStreak: 0 };
    world.readiness = { ...world.readiness, ok: true, eventLog: { writable: true, failingSince: null, lastError: null } };
    expect(await systemd.settle(() => notify.statusTick())).toEqual(['STATUS=heartbeat ok 42 s ago; no events pending']);
  });

  it('sends STOPPING=1 when shutdown begins, then nothing more, and clears its timers', async () => {
    const { notify, gate } = await start({ NOTIFY_SOCKET: systemd.path, WATCHDOG_USEC: '60000000' });
    gate.open({ reachedControlPlane: true });
    await systemd.waitForCount(2);

    await app?.close();
    app = null;
    expect((await systemd.waitForCount(3))[2]).toBe('STOPPING=1\nSTATUS=stopping: finishing in-flight work');
    expect(intervals()).toEqual([]);
    expect(
      await systemd.settle(() => {
        notify.watchdogTick();
        notify.statusTick();
      }),
    ).toEqual([]);
  });

  it('does not send READY=1 when the stop came before the boot gate opened', async () => {
    const { gate } = await start({ NOTIFY_SOCKET: systemd.path });
    await systemd.waitForCount(1);
    await app?.close();
    app = null;
    await systemd.waitForCount(2);
    const after = await systemd.settle(() => gate.open({ reachedControlPlane: true }));
    expect(systemd.messages).toEqual([
      expect.stringMatching(/^STATUS=boot recovery/),
      'STOPPING=1\nSTATUS=stopping: finishing in-flight work',
    ]);
    expect(after).toEqual([]);
  });

  it('without NOTIFY_SOCKET does nothing at all: no datagram, no timer', async () => {
    const { notify, gate } = await start({});
    gate.open({ reachedControlPlane: true });
    const sent = await systemd.settle(() => {
      notify.watchdogTick();
      notify.statusTick();
    });
    expect(sent).toEqual([]);
    expect(intervals()).toEqual([]);
  });

  it('warns once when nothing listens on NOTIFY_SOCKET, and carries on', async () => {
    const { notify, gate, logs } = await start({ NOTIFY_SOCKET: join(dir, 'nobody-here'), WATCHDOG_USEC: '60000000' });
    gate.open({ reachedControlPlane: true });
    await new Promise((resolve) => setImmediate(resolve));
    for (let i = 0; i < 3; i++) notify.watchdogTick();
    const warned = logs.messages('warn', NotifySocket.name);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatch(/cannot notify systemd through .*nobody-here: ENOENT \(no such socket\).*the agent carries on/);
  });

  it('refuses an abstract NOTIFY_SOCKET with a clear warning rather than send to the wrong address', async () => {
    const { logs } = await start({ NOTIFY_SOCKET: '@nixfleet-test-notify', WATCHDOG_USEC: '60000000' });
    expect(logs.messages('warn', NotifySocket.name)).toEqual([
      expect.stringMatching(
        /^NOTIFY_SOCKET=@nixfleet-test-notify is an abstract socket, which this agent's unix-dgram transport cannot address/,
      ),
    ]);
    expect(intervals()).toEqual([]);
  });
});
