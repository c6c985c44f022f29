import { existsSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ReceivedRequest } from '../../dev/control-plane';
import { runCli } from '../support/agent-cli';
import { gapsSecs } from '../support/cp-record';
import { killAllFaultAgents, makeFaultWorld, startFaultAgent, type FaultAgent, type Json, type World } from '../support/fault-world';
import { parsePrometheusText } from '../support/prometheus';

const DAY_SECS = 86_400;

/** Debian's libfaketime (package `faketime`); .ci/run installs it. */
function libfaketime(): string {
  const candidates = readdirSync('/usr/lib', { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => join('/usr/lib', d.name, 'faketime', 'libfaketime.so.1'));
  const found = [join('/usr/lib/faketime/libfaketime.so.1'), ...candidates].find((p) => existsSync(p));
  if (!found) throw new Error('libfaketime is not installed: apt-get install faketime (as .ci/run does)');
  return found;
}

/** How far a heartbeat's `at` (the agent's wall clock) is from when the CP received it, in seconds. */
function atOffsetSecs(h: ReceivedRequest): number {
  return (Date.parse(String((h.body as Json).at)) - h.receivedAt.getTime()) / 1000;
}

/**
 * The agent's wall clock jumps a day ahead, then back, mid-run (libfaketime
 * reads the offset from a file at every call; the monotonic clock is left
 * alone, as NTP or a bad RTC leave it). The CP's clock stays true.
 */
describe('faults: a jumping wall clock', () => {
  let world: World;
  let agent: FaultAgent;
  let offsetFile: string;
  let fakeEnv: Record<string, string>;

  const setOffset = (offset: string): void => {
    // Atomic, so the agent never reads a half-written offset.
    writeFileSync(`${offsetFile}.tmp`, `${offset}\n`);
    renameSync(`${offsetFile}.tmp`, offsetFile);
  };

  beforeAll(async () => {
    world = await makeFaultWorld();
    offsetFile = join(world.dir, 'faketime');
    setOffset('+0');
    fakeEnv = {
      LD_PRELOAD: libfaketime(),
      FAKETIME_TIMESTAMP_FILE: offsetFile,
      FAKETIME_NO_CACHE: '1',
      DONT_FAKE_MONOTONIC: '1',
    };
    agent = await startFaultAgent(world, { env: fakeEnv });
  });
  afterAll(async () => {
    await killAllFaultAgents();
    await world.close();
  });

  const beatsAfter = (from: number): ReceivedRequest[] => world.cp.heartbeats.slice(from).filter((h) => h.status === 200);

  it('a day forward: heartbeats keep their cadence, `at` follows the wall clock, and the skew is reported in the log, /status, /metrics and `status`', async () => {
    await world.cp.waitFor(() => beatsAfter(0).length >= 2, 10_000, 'two heartbeats on true time');
    expect(Math.abs(atOffsetSecs(beatsAfter(0)[1]))).toBeLessThan(5);

    const from = world.cp.heartbeats.length;
    setOffset('+1d');
    await world.cp.waitFor(
      () => beatsAfter(from).filter((h) => atOffsetSecs(h) > DAY_SECS - 5).length >= 4,
      15_000,
      'four heartbeats a day ahead',
    );
    const around = world.cp.heartbeats.slice(from - 2);
    // A scheduler on the wall clock would fire a burst here; the monotonic one keeps ~1 s (±10 % jitter).
    for (const gap of gapsSecs(around)) expect(gap).toBeGreaterThanOrEqual(0.8);
    // Uptime is monotonic too: between two heartbeats it grew by what the CP's true clock saw
    // pass (whole seconds: within 1 s, plus the spread of delivery times), not by the day the wall clock jumped.
    const uptimes = around.map((h) => Number((h.body as Json).uptime_secs));
    const grew = uptimes.slice(1).map((u, i) => u - uptimes[i]);
    for (const [i, gap] of gapsSecs(around).entries()) expect(Math.abs(grew[i] - gap)).toBeLessThan(2);

    const skewed = await agent.statusWhen(
      (s) => Number((s.heartbeat as Json).clockSkewSecs) < -(DAY_SECS - 5),
      'the skew estimate in /status',
    );
    expect(Math.abs(Number((skewed.heartbeat as Json).clockSkewSecs) + DAY_SECS)).toBeLessThan(5);
    expect((skewed.heartbeat as Json).consecutiveFailures).toBe(0);
    const metric = parsePrometheusText(await agent.metricsText()).find((f) => f.name === 'nixfleet_agent_clock_skew_seconds');
    expect(Math.abs(Number(metric?.metrics[0]?.value) + DAY_SECS)).toBeLessThan(5);
    const warned = await agent.waitForLog(/^this host's clock is/, 'a clock-skew warning');
    expect(warned.level).toBe('warn');
    const logged = /^this host's clock is (\d+) s ahead of the control plane's/.exec(warned.message);
    expect(Math.abs(Number(logged?.[1]) - DAY_SECS)).toBeLessThan(5);

    const cli = await runCli(['status', '--admin-listen', `127.0.0.1:${agent.port}`], fakeEnv);
    const said = /^warning: this host's clock is (\d+(?:\.\d)?) s ahead of the control plane's$/m.exec(cli.stdout);
    expect(Math.abs(Number(said?.[1]) - DAY_SECS)).toBeLessThan(5);
  });

  it('and a day back: heartbeats go on at once, `at` is true again, the skew clears, nothing crashed', async () => {
    const from = world.cp.heartbeats.length;
    setOffset('+0');
    // A scheduler on the wall clock would now wait a day.
    await world.cp.waitFor(
      () => beatsAfter(from).filter((h) => Math.abs(atOffsetSecs(h)) < 5).length >= 3,
      15_000,
      'three heartbeats on true time again',
    );
    for (const gap of gapsSecs(world.cp.heartbeats.slice(from - 2))) expect(gap).toBeGreaterThanOrEqual(0.8);
    const back = await agent.statusWhen((s) => Math.abs(Number((s.heartbeat as Json).clockSkewSecs)) < 5, 'the skew gone from /status');
    expect((back.heartbeat as Json).consecutiveFailures).toBe(0);
    await agent.waitForLog(/clock agrees with the control plane's again/, 'the skew cleared in the log');
    expect(agent.logs().filter((l) => l.level === 'error' || l.level === 'fatal')).toEqual([]);
    expect(await agent.stop()).toBe(0);
  });
});
