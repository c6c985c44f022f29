import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { type AgentUnderTest, buildAgent, makeWorld, type World } from '../../test/support/agent-harness';
import { LoopDelaySampler } from '../metrics/loop-delay.sampler';
import { RecoveryService } from '../recovery/recovery.service';
import { type HealthCheck, HealthService } from './health.service';

const S = 1e9;

describe('HealthService liveness: a stalled event loop, from the shared monitor, on the real module graph', () => {
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
  });

  /** The agent with its loop-delay monitor replaced by a histogram the test records intervals into (ns). */
  async function start(): Promise<{ a: AgentUnderTest; delays: RecordableHistogram; loop: () => HealthCheck | undefined }> {
    const delays = createHistogram();
    agent = await buildAgent(world, { customize: (b) => b.overrideProvider(LoopDelaySampler).useValue(new LoopDelaySampler(delays)) });
    await agent.app.get(RecoveryService).whenComplete();
    const health = agent.app.get(HealthService);
    return { a: agent, delays, loop: () => health.liveness().checks.find((c) => c.name === 'event-loop') };
  }

  it('turns not live when a look finds an interval over 5 s, naming it, and live again once the window has passed', async () => {
    const { a, delays, loop } = await start();
    delays.record(1 * S);
    expect(loop()).toEqual({ name: 'event-loop', ok: true, detail: 'responsive' });

    delays.record(6.2 * S);
    delays.record(1 * S);
    expect(loop()).toEqual({ name: 'event-loop', ok: false, detail: 'the event loop was blocked for 6.2 s' });
    a.clock.advance(9_000);
    expect(loop()?.ok).toBe(false);
    a.clock.advance(1_001);
    expect(loop()).toEqual({ name: 'event-loop', ok: true, detail: 'responsive' });
  });

  it('stays live through delays under the threshold', async () => {
    const { delays, loop } = await start();
    for (const secs of [1, 1.3, 4.9, 1]) delays.record(secs * S);
    expect(loop()).toEqual({ name: 'event-loop', ok: true, detail: 'responsive' });
  });

  it('sees a stall shorter than an earlier one, and one that happened long before anyone looked', async () => {
    const { a, delays, loop } = await start();
    delays.record(7 * S);
    expect(loop()?.detail).toBe('the event loop was blocked for 7.0 s');
    a.clock.advance(11_000);
    expect(loop()?.ok).toBe(true);

    delays.record(5.5 * S);
    // Minutes without a look (no watchdog, no probe): the stall is news to the next one.
    a.clock.advance(300_000);
    expect(loop()).toEqual({ name: 'event-loop', ok: false, detail: 'the event loop was blocked for more than 5.0 s' });
  });
});
