import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { register as globalRegistry } from 'prom-client';
import { ROLLOUT_STATES } from '../protocol/rollout';
import { LoopDelaySampler } from './loop-delay.sampler';
import { type LiveState, MetricsService } from './metrics.service';
import { type PromFamily, parsePrometheusText } from '../../test/support/prometheus';

const P = 'nixfleet_agent_';

const IDLE: LiveState = {
  consecutiveFailures: 0,
  lastSuccessUnixSecs: null,
  clockSkewSecs: null,
  outbound: { pending: 0, delivered: 0, refused: 0 },
  reducerQueueDepth: 0,
  rolloutStates: [],
  clientCertSecondsToExpiry: null,
  eventLogFailing: false,
};

/** A service whose loop-delay sampler reads a histogram the test records into, in place of Node's monitor. */
function metricsService(delays: RecordableHistogram = createHistogram()): MetricsService {
  return new MetricsService(new LoopDelaySampler(delays));
}

async function scrape(metrics: MetricsService, live: Partial<LiveState> = {}): Promise<Map<string, PromFamily>> {
  const families = parsePrometheusText(await metrics.scrape({ ...IDLE, ...live }));
  return new Map(families.map((f) => [f.name, f]));
}

function family(all: Map<string, PromFamily>, name: string): PromFamily {
  const f = all.get(name);
  if (!f) throw new Error(`${name} is not in the exposition; it has ${[...all.keys()].join(', ')}`);
  return f;
}

function valueOf(all: Map<string, PromFamily>, name: string, labels: Record<string, string> = {}): number {
  const sample = family(all, name).metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  if (sample?.value === undefined) throw new Error(`${name}${JSON.stringify(labels)} has no sample`);
  return Number(sample.value);
}

describe('MetricsService', () => {
  it('exposes every series from the start, each with HELP: all results, kinds and rollout states at 0', async () => {
    const all = await scrape(metricsService());

    for (const name of [
      'heartbeats_total',
      'heartbeat_duration_seconds',
      'activations_total',
      'heartbeat_consecutive_failures',
      'outbound_events',
      'replayed_events_total',
      'reducer_queue_depth',
      'rollouts',
      'event_log_append_failures_total',
      'event_log_append_failing',
    ]) {
      expect(family(all, P + name).help).not.toBe('');
    }
    expect(
      family(all, `${P}heartbeats_total`)
        .metrics.map((m) => m.labels?.result)
        .sort(),
    ).toEqual(['aborted', 'bad-body', 'connect', 'http-status', 'network', 'ok', 'timeout', 'tls']);
    expect(family(all, `${P}heartbeats_total`).metrics.every((m) => m.value === '0')).toBe(true);
    expect(family(all, `${P}activations_total`).metrics).toHaveLength(6);
    expect(family(all, `${P}rollouts`).metrics.map((m) => m.labels?.state)).toEqual([...ROLLOUT_STATES]);
    expect(family(all, `${P}heartbeat_duration_seconds`).type).toBe('HISTOGRAM');
    // Process metrics ride along under their standard names.
    expect(all.has('process_cpu_seconds_total')).toBe(true);
    expect(all.has('nodejs_eventloop_lag_seconds')).toBe(true);
  });

  it("carries every one of prom-client's default process metrics, under its standard name", async () => {
    // Each of prom-client's collectors names its metrics; the agent runs them one by one, its own loop lag in place of one.
    const load = createRequire(__filename);
    const collectors = join(dirname(load.resolve('prom-client')), 'lib', 'metrics');
    const standard = readdirSync(collectors)
      .filter((f) => f.endsWith('.js'))
      .flatMap((f) => (load(join(collectors, f)) as { metricNames?: string[] }).metricNames ?? []);
    expect(standard).toContain('nodejs_eventloop_lag_p99_seconds');
    expect(standard.length).toBeGreaterThan(25);

    const all = await scrape(metricsService());

    expect(standard.filter((name) => !all.has(name))).toEqual([]);
  });

  it('shows the loop lag from the shared sampler, as how late it fired, over its whole record', async () => {
    const delays = createHistogram();
    const metrics = metricsService(delays);
    // The sampler fires every second: what it records is 1 s plus the lag.
    for (const ms of [1_000, 1_000, 1_000, 1_400]) delays.record(ms * 1e6);

    let all = await scrape(metrics);
    expect(valueOf(all, 'nodejs_eventloop_lag_min_seconds')).toBeCloseTo(0, 2);
    expect(valueOf(all, 'nodejs_eventloop_lag_max_seconds')).toBeCloseTo(0.4, 2);
    expect(valueOf(all, 'nodejs_eventloop_lag_mean_seconds')).toBeCloseTo(0.1, 2);
    expect(valueOf(all, 'nodejs_eventloop_lag_stddev_seconds')).toBeCloseTo(Math.sqrt(0.03), 2);
    expect(valueOf(all, 'nodejs_eventloop_lag_p50_seconds')).toBeCloseTo(0, 2);
    expect(valueOf(all, 'nodejs_eventloop_lag_p99_seconds')).toBeCloseTo(0.4, 2);
    expect(family(all, 'nodejs_eventloop_lag_max_seconds').help).toMatch(/since the agent started/);

    // A scrape takes nothing away: the next one still has the 0.4 s.
    delays.record(1_050 * 1e6);
    all = await scrape(metrics);
    expect(valueOf(all, 'nodejs_eventloop_lag_max_seconds')).toBeCloseTo(0.4, 2);
    expect(valueOf(all, 'nodejs_eventloop_lag_mean_seconds')).toBeCloseTo(0.09, 2);
  });

  it('leaves out what is not known rather than showing 0: last success, clock skew, certificate expiry', async () => {
    const metrics = metricsService();
    let all = await scrape(metrics);
    for (const name of ['heartbeat_last_success_timestamp_seconds', 'clock_skew_seconds', 'client_certificate_expiry_seconds']) {
      expect(all.has(P + name)).toBe(false);
    }

    all = await scrape(metrics, { lastSuccessUnixSecs: 1_795_000_000, clockSkewSecs: -3, clientCertSecondsToExpiry: 86_400 });
    expect(valueOf(all, `${P}heartbeat_last_success_timestamp_seconds`)).toBe(1_795_000_000);
    expect(valueOf(all, `${P}clock_skew_seconds`)).toBe(-3);
    expect(valueOf(all, `${P}client_certificate_expiry_seconds`)).toBe(86_400);
    expect(family(all, `${P}clock_skew_seconds`).help).toMatch(/Date header/);

    all = await scrape(metrics, { clientCertSecondsToExpiry: null, clockSkewSecs: 0 });
    expect(all.has(`${P}client_certificate_expiry_seconds`)).toBe(false);
    expect(valueOf(all, `${P}clock_skew_seconds`)).toBe(0);
  });

  it('counts heartbeats by result and puts each latency in its bucket', async () => {
    const metrics = metricsService();
    metrics.recordHeartbeat('ok', 0.04);
    metrics.recordHeartbeat('ok', 1.5);
    metrics.recordHeartbeat('http-status', 0.02);
    metrics.recordHeartbeat('timeout', 10);

    const all = await scrape(metrics);
    expect(valueOf(all, `${P}heartbeats_total`, { result: 'ok' })).toBe(2);
    expect(valueOf(all, `${P}heartbeats_total`, { result: 'http-status' })).toBe(1);
    expect(valueOf(all, `${P}heartbeats_total`, { result: 'timeout' })).toBe(1);
    expect(valueOf(all, `${P}heartbeats_total`, { result: 'connect' })).toBe(0);
    const [histogram] = family(all, `${P}heartbeat_duration_seconds`).metrics;
    expect(histogram).toMatchObject({ count: '4', sum: '11.56' });
    expect(histogram.buckets).toMatchObject({ '0.025': '1', '0.05': '2', '1': '2', '2.5': '3', '10': '4', '+Inf': '4' });
  });

  it('counts activations by kind and outcome', async () => {
    const metrics = metricsService();
    metrics.recordActivation('switch', 'completed');
    metrics.recordActivation('switch', 'completed');
    metrics.recordActivation('rollback', 'failed');
    metrics.recordReplayed();
    metrics.recordReplayed();

    const all = await scrape(metrics);
    expect(valueOf(all, `${P}activations_total`, { kind: 'switch', outcome: 'completed' })).toBe(2);
    expect(valueOf(all, `${P}activations_total`, { kind: 'rollback', outcome: 'failed' })).toBe(1);
    expect(valueOf(all, `${P}activations_total`, { kind: 'switch', outcome: 'deferred' })).toBe(0);
    expect(valueOf(all, `${P}replayed_events_total`)).toBe(2);
  });

  it('sets the gauges from live state at each scrape; rollouts counted per state', async () => {
    const metrics = metricsService();
    let all = await scrape(metrics, {
      consecutiveFailures: 4,
      outbound: { pending: 3, delivered: 10, refused: 1 },
      reducerQueueDepth: 2,
      rolloutStates: ['Soaking', 'Converged', 'Converged'],
    });
    expect(valueOf(all, `${P}heartbeat_consecutive_failures`)).toBe(4);
    expect(valueOf(all, `${P}outbound_events`, { state: 'pending' })).toBe(3);
    expect(valueOf(all, `${P}outbound_events`, { state: 'delivered' })).toBe(10);
    expect(valueOf(all, `${P}outbound_events`, { state: 'refused' })).toBe(1);
    expect(valueOf(all, `${P}reducer_queue_depth`)).toBe(2);
    expect(valueOf(all, `${P}rollouts`, { state: 'Converged' })).toBe(2);
    expect(valueOf(all, `${P}rollouts`, { state: 'Soaking' })).toBe(1);
    expect(valueOf(all, `${P}rollouts`, { state: 'Failed' })).toBe(0);

    // A rollout that moved on is no longer counted in its old state.
    all = await scrape(metrics, { rolloutStates: ['Converged', 'Converged', 'Converged'] });
    expect(valueOf(all, `${P}rollouts`, { state: 'Soaking' })).toBe(0);
    expect(valueOf(all, `${P}rollouts`, { state: 'Converged' })).toBe(3);
  });

  it('counts probe runs by probe and result with their durations, failed rollouts by policy and rollbacks by outcome', async () => {
    const metrics = metricsService();
    let all = await scrape(metrics);
    // The verdicts exist from the start, so rate() sees the first one.
    expect(family(all, `${P}rollouts_failed_total`).metrics.map((m) => [m.labels?.policy, m.value])).toEqual([
      ['halt', '0'],
      ['rollback-and-halt', '0'],
    ]);
    expect(family(all, `${P}rollbacks_total`).metrics.map((m) => [m.labels?.outcome, m.value])).toEqual([
      ['reverted', '0'],
      ['failed', '0'],
    ]);

    metrics.recordProbeRun('db-ping', 'pass', 0.004);
    metrics.recordProbeRun('db-ping', 'pass', 0.003);
    metrics.recordProbeRun('db-ping', 'fail', 5.2);
    metrics.recordProbeRun('web', 'pass', 0.02);
    metrics.recordRolloutFailed('rollback-and-halt');
    metrics.recordRollback('reverted');
    all = await scrape(metrics);

    expect(valueOf(all, `${P}probe_results_total`, { probe: 'db-ping', status: 'pass' })).toBe(2);
    expect(valueOf(all, `${P}probe_results_total`, { probe: 'db-ping', status: 'fail' })).toBe(1);
    expect(valueOf(all, `${P}probe_results_total`, { probe: 'web', status: 'pass' })).toBe(1);
    expect(family(all, `${P}probe_duration_seconds`).type).toBe('HISTOGRAM');
    // The parser drops a histogram's labels: its per-probe lines are read from the text itself.
    const text = await metrics.scrape(IDLE);
    expect(text).toContain(`${P}probe_duration_seconds_bucket{le="0.005",probe="db-ping"} 2`);
    expect(text).toContain(`${P}probe_duration_seconds_bucket{le="5",probe="db-ping"} 2`);
    expect(text).toContain(`${P}probe_duration_seconds_bucket{le="10",probe="db-ping"} 3`);
    expect(text).toContain(`${P}probe_duration_seconds_count{probe="db-ping"} 3`);
    expect(text).toContain(`${P}probe_duration_seconds_count{probe="web"} 1`);
    expect(valueOf(all, `${P}rollouts_failed_total`, { policy: 'rollback-and-halt' })).toBe(1);
    expect(valueOf(all, `${P}rollbacks_total`, { outcome: 'reverted' })).toBe(1);
    expect(valueOf(all, `${P}rollbacks_total`, { outcome: 'failed' })).toBe(0);
  });

  it('counts failed event-log appends, keeps the time of the last one, and shows 1 while they fail', async () => {
    const metrics = metricsService();
    let all = await scrape(metrics);
    expect(valueOf(all, `${P}event_log_append_failures_total`)).toBe(0);
    expect(valueOf(all, `${P}event_log_append_failing`)).toBe(0);
    expect(all.has(`${P}event_log_last_append_failure_timestamp_seconds`)).toBe(false);
    expect(family(all, `${P}event_log_append_failures_total`).type).toBe('COUNTER');

    metrics.recordEventLogAppendFailure(1_795_000_000);
    metrics.recordEventLogAppendFailure(1_795_000_005);
    all = await scrape(metrics, { eventLogFailing: true });
    expect(valueOf(all, `${P}event_log_append_failures_total`)).toBe(2);
    expect(valueOf(all, `${P}event_log_last_append_failure_timestamp_seconds`)).toBe(1_795_000_005);
    expect(valueOf(all, `${P}event_log_append_failing`)).toBe(1);

    // Writes work again: the gauge says so, the counter and the last failure's time stay.
    all = await scrape(metrics, { eventLogFailing: false });
    expect(valueOf(all, `${P}event_log_append_failing`)).toBe(0);
    expect(valueOf(all, `${P}event_log_append_failures_total`)).toBe(2);
    expect(valueOf(all, `${P}event_log_last_append_failure_timestamp_seconds`)).toBe(1_795_000_005);
  });

  it('keeps its own registry: nothing lands in prom-client’s global one or in another instance', async () => {
    const a = metricsService();
    const b = metricsService();
    a.recordHeartbeat('ok', 0.1);

    expect(valueOf(await scrape(b), `${P}heartbeats_total`, { result: 'ok' })).toBe(0);
    expect(globalRegistry.getSingleMetric(`${P}heartbeats_total`)).toBeUndefined();
    expect(a.contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
  });
});
