import { type AgentUnderTest, type BuildOptions, buildAgent, fakeClosure, makeWorld, type World } from '../../test/support/agent-harness';
import type { ReceivedRequest } from '../../dev/control-plane';
import { ActivationService } from '../activation/activation.service';
import { HeartbeatService } from '../heartbeat/heartbeat.service';
import { BootGate } from '../lifecycle/boot-gate';
import type { AgentEvent } from '../protocol/events.wire';
import { EMIT_EVENT_PORT, type EmitEventPort } from '../reducer/reducer.ports';
import { ProbeRunnerService } from '../probes/probe-runner.service';
import { ReducerService } from '../reducer/reducer.service';
import { DrainerService } from './drainer.service';
import { EventLogService } from './event-log.service';
import { OutboundPorts } from './outbound.ports';

const MACHINE = 'web-01';
const BOOT_CLOSURE = fakeClosure('web-01-26.05');
const TARGET = fakeClosure('web-01-26.11', 'b');

/** Hand-made events: a ProbeResult per seq, or a terminal Converged. */
function probeResult(seq: number): AgentEvent {
  return { kind: 'ProbeResult', seq, probeName: 'http', mode: 'enforce', status: 'pass', observedAt: '2026-11-28T12:00:00.000Z' };
}
function converged(seq: number): AgentEvent {
  return { kind: 'Converged', seq, convergedAt: '2026-11-28T12:00:00.000Z', currentClosure: TARGET };
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('OutboundPorts: emit and Replay-From against the dev control plane over mutual TLS', () => {
  let world: World;
  let agent: AgentUnderTest | null = null;

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterAll(async () => {
    await world.close();
  });
  afterEach(async () => {
    await agent?.close();
    agent = null;
    world.cp.setDefault('events', null);
    world.cp.setReplayFrom(null);
    world.setCurrentSystem(BOOT_CLOSURE);
  });

  interface Started {
    a: AgentUnderTest;
    drainer: DrainerService;
    log: EventLogService;
    hb: HeartbeatService;
  }

  async function start(options: BuildOptions = {}): Promise<Started> {
    agent = await buildAgent(world, { extra: ['--heartbeat-interval', '60', ...(options.extra ?? [])], ...options });
    await agent.app.get(BootGate).whenOpen();
    await new Promise((resolve) => setImmediate(resolve));
    const a = agent;
    return { a, drainer: a.app.get(DrainerService), log: a.app.get(EventLogService), hb: a.app.get(HeartbeatService) };
  }

  async function emit(a: AgentUnderTest, rolloutId: string, events: AgentEvent[]): Promise<void> {
    await a.app.get<EmitEventPort>(EMIT_EVENT_PORT).emit(events.map((event) => ({ type: 'EmitEvent', rolloutId, event, meta: {} })));
  }

  /** One steady heartbeat, now due; resolves once its answer (and any Replay-From) was handled. */
  async function heartbeat(s: Started): Promise<void> {
    const before = world.cp.heartbeats.length;
    s.a.clock.advance(s.hb.status().intervalSecs * 1000);
    s.hb.tick();
    await s.hb.settled();
    expect(world.cp.heartbeats.length).toBe(before + 1);
    expect(world.cp.heartbeats.at(-1)?.status).toBe(200);
  }

  const seqOf = (p: ReceivedRequest): number => (p.body as { event: { seq: number } }).event.seq;
  const rolloutOf = (p: ReceivedRequest): string => (p.body as { rolloutId: string }).rolloutId;
  /** `rolloutId#seq` of every event POST from index `from` on, in arrival order. */
  const postsSince = (from: number): string[] => world.cp.eventPosts.slice(from).map((p) => `${rolloutOf(p)}#${seqOf(p)}`);
  const stored = (rolloutId: string): Map<number, string> => new Map(world.cp.events(MACHINE, rolloutId).map((e) => [e.seq, e.raw]));
  /** Per rollout, the seqs of its event POSTs from index `from` on, in arrival order. */
  const seqsByRollout = (from: number): Record<string, number[]> => {
    const out: Record<string, number[]> = {};
    for (const p of world.cp.eventPosts.slice(from)) (out[rolloutOf(p)] ??= []).push(seqOf(p));
    return out;
  };

  it('emit: the events are durable (pending in the log) when emit resolves, and the drainer POSTs exactly the logged bytes', async () => {
    const rollout = 'stable@pemitaaa';
    const s = await start();
    world.cp.setDefault('events', { stall: true });
    await emit(s.a, rollout, [probeResult(1), probeResult(2)]);
    // The append resolved: both are durable; the drainer's first POST is under way or about to be.
    expect(s.log.events(rollout).map((e) => `${e.seq}:${e.delivery.state}`)).toEqual(['1:pending', '2:pending']);
    await world.cp.waitFor(() => world.cp.eventPosts.some((p) => rolloutOf(p) === rollout), 2_000);
    const posted = world.cp.eventPosts.find((p) => rolloutOf(p) === rollout);
    expect(posted?.raw).toBe(s.log.get(rollout, 1)?.envelope);
    expect(JSON.parse(posted?.raw ?? '{}')).toEqual({ hostname: MACHINE, rolloutId: rollout, event: probeResult(1) });
  });

  describe('Replay-From (PROTOCOL §7)', () => {
    it('plain N: resends every event of the newest rollout after N, in order, byte for byte as first sent', async () => {
      const older = 'stable@polderaa';
      const newest = 'stable@pnewesta';
      const s = await start();
      await emit(s.a, older, range(1, 4).map(probeResult));
      await emit(s.a, newest, range(1, 5).map(probeResult));
      await s.drainer.idle();
      const before = stored(newest);
      expect([...before.keys()]).toEqual([1, 2, 3, 4, 5]);

      world.cp.loseAllState();
      world.cp.setReplayFrom('2');
      const mark = world.cp.eventPosts.length;
      await heartbeat(s);
      world.cp.setReplayFrom(null);
      await s.drainer.idle();

      expect(postsSince(mark)).toEqual([`${newest}#3`, `${newest}#4`, `${newest}#5`]);
      const after = stored(newest);
      expect([...after.keys()]).toEqual([3, 4, 5]);
      for (const seq of [3, 4, 5]) expect(after.get(seq)).toBe(before.get(seq));
      expect(world.cp.events(MACHINE, older)).toEqual([]);
      expect(s.drainer.replayStatus()).toEqual({ running: false, rolloutId: newest, fromSeq: 2, resent: 3, missing: [] });
      expect(s.a.logs.messages('log', OutboundPorts.name)).toContain(
        `heartbeat asked for a replay (2): resending 3 event(s) of ${newest} after seq 2`,
      );
    });

    it("after the CP lost its database, its own Replay-From brings back the rollout's real events unchanged", async () => {
      const rollout = 'stable@pwipeaaa';
      const s = await start();
      const reducer = s.a.app.get(ReducerService);
      await reducer.submit({
        type: 'Activate',
        rolloutId: rollout,
        targetClosure: TARGET,
        soakDueAt: new Date(s.a.clock.now().getTime() + 3_600_000).toISOString(),
        currentClosure: BOOT_CLOSURE,
        dispatchedAt: s.a.clock.now().toISOString(),
      });
      await s.a.app.get(ActivationService).idle();
      await s.a.app.get(ProbeRunnerService).settled();
      await reducer.drain();
      await s.drainer.idle();
      // DispatchAck, ActivationStarted, ActivationCompleted, ProbeTopologyDeclared.
      const before = world.cp.events(MACHINE, rollout).map((e) => e.raw);
      expect(before).toHaveLength(4);

      world.cp.loseAllState();
      const mark = world.cp.eventPosts.length;
      await heartbeat(s);
      expect(world.cp.heartbeats.at(-1)?.body).toMatchObject({ last_event_seq_by_rollout: { [rollout]: 4 } });
      await s.drainer.idle();

      expect(postsSince(mark)).toEqual([`${rollout}#1`, `${rollout}#2`, `${rollout}#3`, `${rollout}#4`]);
      expect(world.cp.events(MACHINE, rollout).map((e) => e.raw)).toEqual(before);
      expect(s.drainer.replayStatus()).toMatchObject({ running: false, rolloutId: rollout, fromSeq: 0, resent: 4 });
      // The CP holds everything again: the next heartbeat asks for nothing.
      await heartbeat(s);
      expect(world.cp.heartbeats.at(-1)?.status).toBe(200);
      await s.drainer.idle();
      expect(world.cp.eventPosts.length).toBe(mark + 4);
    });

    it('per-rollout form: replays each named rollout from its own seq', async () => {
      const a = 'stable@pformaaa';
      const b = 'beta@pformbbb';
      const s = await start();
      await emit(s.a, a, range(1, 3).map(probeResult));
      await emit(s.a, b, range(1, 2).map(probeResult));
      await s.drainer.idle();
      const beforeA = stored(a);
      const beforeB = stored(b);

      world.cp.loseAllState();
      world.cp.setReplayFrom(`${a}=1, ${b}=0`);
      const mark = world.cp.eventPosts.length;
      await heartbeat(s);
      world.cp.setReplayFrom(null);
      await s.drainer.idle();

      // Each in seq order; the two rollouts go side by side.
      expect(seqsByRollout(mark)).toEqual({ [a]: [2, 3], [b]: [1, 2] });
      expect(stored(a)).toEqual(new Map([2, 3].map((seq) => [seq, beforeA.get(seq)])));
      expect(stored(b)).toEqual(beforeB);
      expect(s.drainer.replayStatus()).toMatchObject({ running: false, rolloutId: b, fromSeq: 0, resent: 2 });
    });

    it('a second signal while a replay runs is merged: each seq is resent once', async () => {
      const rollout = 'stable@pmergeaa';
      const s = await start();
      await emit(s.a, rollout, range(1, 30).map(probeResult));
      await s.drainer.idle();
      world.cp.loseAllState();

      // The replay's first POST is slow, so the next signals surely arrive while it runs.
      world.cp.respondNext('events', { delayMs: 300 });
      const mark = world.cp.eventPosts.length;
      world.cp.setReplayFrom('10');
      await heartbeat(s);
      await world.cp.waitFor(() => world.cp.eventPosts.length > mark, 2_000, 'the first replayed POST');
      expect(s.drainer.replayStatus()).toMatchObject({ running: true, fromSeq: 10 });

      world.cp.setReplayFrom('0'); // reaches further back: only seqs 1..10 are added
      await heartbeat(s);
      world.cp.setReplayFrom('5'); // inside the running replay: nothing is added
      await heartbeat(s);
      world.cp.setReplayFrom(null);
      await s.drainer.idle();

      const posted = world.cp.eventPosts.slice(mark).map(seqOf);
      const perSeq = new Map<number, number>();
      for (const seq of posted) perSeq.set(seq, (perSeq.get(seq) ?? 0) + 1);
      expect([...perSeq.keys()].sort((x, y) => x - y)).toEqual(range(1, 30));
      expect([...perSeq.values()].every((n) => n === 1)).toBe(true);
      // 11 was in flight when the merge came; the rest go out in seq order.
      expect(posted).toEqual([11, ...range(1, 10), ...range(12, 30)]);
      expect([...stored(rollout).keys()]).toEqual(range(1, 30));
      expect(s.drainer.replayStatus()).toEqual({ running: false, rolloutId: rollout, fromSeq: 0, resent: 30, missing: [] });
      expect(s.a.logs.messages('log', DrainerService.name)).toContain(
        `replay of ${rollout} from seq 5 is already covered by the running one (from 0)`,
      );
    });

    it('seqs retention dropped are logged as a gap and shown in replayStatus().missing; the rest is replayed', async () => {
      const rollout = 'stable@pretenaa';
      const s = await start({ extra: ['--event-retention-days', '0'] });
      await emit(s.a, rollout, range(1, 4).map(probeResult));
      await s.drainer.idle();
      // The terminal event stays pending (the CP is unavailable), so compaction keeps it.
      world.cp.setDefault('events', { status: 503 });
      await emit(s.a, rollout, [converged(5)]);
      await s.drainer.idle();
      await s.log.compact();
      expect(s.log.events(rollout).map((e) => e.seq)).toEqual([5]);

      world.cp.setDefault('events', null);
      world.cp.loseAllState();
      world.cp.setReplayFrom('2');
      await heartbeat(s);
      world.cp.setReplayFrom(null);

      expect(s.a.logs.messages('warn', OutboundPorts.name)).toEqual([
        `replay of ${rollout} from seq 2: 2 event(s) (seqs 3, 4) were already dropped by retention; the control plane cannot get them from this agent`,
      ]);
      expect(s.drainer.replayStatus()).toMatchObject({ rolloutId: rollout, fromSeq: 2, missing: [3, 4] });
      // The pending seq 5 goes out once its backoff is over (the heartbeat moved the clock past it).
      s.drainer.kick();
      await s.drainer.idle();
      expect([...stored(rollout).keys()]).toEqual([5]);
      expect(s.drainer.replayStatus()).toEqual({ running: false, rolloutId: rollout, fromSeq: 2, resent: 1, missing: [3, 4] });
    });

    it('a replay of a rollout retention emptied is over at once and shows every asked-for seq as missing', async () => {
      const rollout = 'stable@pgoneaaa';
      const s = await start({ extra: ['--event-retention-days', '0'] });
      await emit(s.a, rollout, [...range(1, 2).map(probeResult), converged(3)]);
      await s.drainer.idle();
      await s.log.compact();
      expect(s.log.events(rollout)).toEqual([]);

      world.cp.loseAllState();
      world.cp.setReplayFrom('0');
      const mark = world.cp.eventPosts.length;
      await heartbeat(s);
      world.cp.setReplayFrom(null);
      await s.drainer.idle();

      expect(world.cp.eventPosts.length).toBe(mark);
      expect(s.a.logs.messages('warn', OutboundPorts.name)).toEqual([
        expect.stringContaining('(seqs 1, 2, 3) were already dropped by retention'),
      ]);
      expect(s.drainer.replayStatus()).toEqual({ running: false, rolloutId: rollout, fromSeq: 0, resent: 0, missing: [1, 2, 3] });
    });

    it('a signal with nothing to resend does not swallow the next one for that rollout', async () => {
      const rollout = 'stable@pnothing';
      const s = await start();
      await emit(s.a, rollout, range(1, 3).map(probeResult));
      await s.drainer.idle();

      // The CP holds all three and says so.
      world.cp.setReplayFrom('3');
      await heartbeat(s);
      world.cp.setReplayFrom(null);
      await s.drainer.idle();
      expect(s.drainer.replayStatus()).toEqual({ running: false, rolloutId: rollout, fromSeq: 3, resent: 0, missing: [] });

      await emit(s.a, rollout, range(4, 5).map(probeResult));
      await s.drainer.idle();
      const before = stored(rollout);
      world.cp.loseAllState();
      world.cp.setReplayFrom('3');
      const mark = world.cp.eventPosts.length;
      await heartbeat(s);
      world.cp.setReplayFrom(null);
      await s.drainer.idle();

      expect(postsSince(mark)).toEqual([`${rollout}#4`, `${rollout}#5`]);
      expect(stored(rollout)).toEqual(new Map([4, 5].map((seq) => [seq, before.get(seq)])));
      expect(s.drainer.replayStatus()).toEqual({ running: false, rolloutId: rollout, fromSeq: 3, resent: 2, missing: [] });
    });

    it('a replay of 2,000 events over 4 rollouts: each rollout in seq order, each seq once, and every heartbeat due meanwhile goes out on schedule', async () => {
      const rollouts = ['stable@pbulkaaa', 'stable@pbulkbbb', 'beta@pbulkccc', 'beta@pbulkddd'];
      const perRollout = 500;
      const total = rollouts.length * perRollout;
      const s = await start({ extra: ['--heartbeat-interval', '1'] });
      for (const rollout of rollouts) {
        for (let from = 1; from <= perRollout; from += 250) await emit(s.a, rollout, range(from, from + 249).map(probeResult));
      }
      await s.drainer.idle();
      expect(s.log.stats()).toMatchObject({ pending: 0, delivered: total });

      world.cp.loseAllState();
      world.cp.setReplayFrom(rollouts.map((r) => `${r}=0`).join(', '));
      const eventMark = world.cp.eventPosts.length;
      const requestMark = world.cp.requests.length;
      await heartbeat(s);
      world.cp.setReplayFrom(null);
      const held = (): number => world.cp.events(MACHINE).length;
      expect(held()).toBeLessThan(total);

      // Each round is one heartbeat interval of fake time: the due heartbeat must go out, replay or not.
      while (held() < total) {
        await heartbeat(s);
        expect(Date.parse(s.hb.status().nextDueAt ?? '') - s.a.clock.now().getTime()).toBe(1_000);
      }
      await s.drainer.idle();

      const expected = Object.fromEntries(rollouts.map((r) => [r, range(1, perRollout)]));
      expect(seqsByRollout(eventMark)).toEqual(expected);
      expect(world.cp.eventPosts.slice(eventMark).every((p) => p.status === 204 && p.outcome === 'stored')).toBe(true);
      for (const rollout of rollouts) expect([...stored(rollout).keys()]).toEqual(range(1, perRollout));

      // At the CP, heartbeats arrive between replayed events: none waited for the replay to end.
      let replayed = 0;
      let beatsBetween = 0;
      for (const r of world.cp.requests.slice(requestMark)) {
        if (r.route === 'events') replayed += 1;
        else if (r.route === 'heartbeat' && replayed > 0 && replayed < total) beatsBetween += 1;
      }
      expect(beatsBetween).toBeGreaterThanOrEqual(1);
      // 4,000 real POSTs over TLS: ~10 s on a quiet machine, past the default 30 s on a loaded CI runner.
    }, 120_000);
  });
});
