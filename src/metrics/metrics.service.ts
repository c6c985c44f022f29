import { Injectable } from '@nestjs/common';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { ROLLOUT_STATES, type RolloutState } from '../protocol/rollout';
import { LoopDelaySampler } from './loop-delay.sampler';
import { HEARTBEAT_LATENCY_BUCKETS, METRIC_PREFIX, PROBE_DURATION_BUCKETS } from './metrics.constants';
import { registerProcessMetrics } from './process-metrics';

/*
 * The label values are the registry's own: it imports no feature. A feature
 * passes its own kinds (comms' CpFailureKind, activation's outcome), so a
 * kind added there without a label here fails to compile at the call site.
 */
/** A heartbeat's `result` label: `ok`, or why the CP gave no usable answer. */
export type HeartbeatResult = 'ok' | 'connect' | 'tls' | 'timeout' | 'network' | 'http-status' | 'bad-body' | 'aborted';
export type ActivationKind = 'switch' | 'rollback';
export type ActivationResult = 'completed' | 'failed' | 'deferred';
export type OutboundState = 'pending' | 'delivered' | 'refused';
export type ProbeResultLabel = 'pass' | 'fail';
/** `halt` or `rollback-and-halt`: the policy a failed rollout was given. */
export type FailedPolicyLabel = 'halt' | 'rollback-and-halt';
/** A rollback's outcome: the host is back on the old closure, or it is not. */
export type RollbackOutcome = 'reverted' | 'failed';

/** Why a dispatch was not acted on (PROTOCOL §12): the trust module's RefusalReason, one label per reason. */
export type DispatchRefusalLabel =
  | 'malformed-json'
  | 'malformed-signature'
  | 'bad-signature'
  | 'schema'
  | 'schema-version'
  | 'no-signed-at'
  | 'signed-before-reject-before'
  | 'stale'
  | 'from-the-future'
  | 'rollout-id'
  | 'wrong-rollout'
  | 'not-for-this-host'
  | 'wrong-target'
  | 'cache-tampered'
  | 'cache-unreadable'
  | 'cache-missing'
  | 'manifest-unavailable';
/** How a dispatch's provenance was settled: verified with the trust roots, refused, or acted on unverified (--allow-unsigned). */
export type DispatchTrustLabel = 'verified' | 'refused' | 'unverified';

/** What the gauges show, read from the services at scrape time. null means not known: that gauge is left out. */
export interface LiveState {
  consecutiveFailures: number;
  lastSuccessUnixSecs: number | null;
  clockSkewSecs: number | null;
  outbound: Record<OutboundState, number>;
  reducerQueueDepth: number;
  /** The state of every rollout the reducer holds. */
  rolloutStates: readonly RolloutState[];
  clientCertSecondsToExpiry: number | null;
  /** A streak of failed event-log writes is going on (EventLogService clears it once a write works). */
  eventLogFailing: boolean;
}

/** Every member of a string union: the Record makes the compiler reject a list that misses one. */
function members<T extends string>(all: Record<T, true>): T[] {
  return Object.keys(all) as T[];
}

const HEARTBEAT_RESULTS = members<HeartbeatResult>({
  ok: true,
  connect: true,
  tls: true,
  timeout: true,
  network: true,
  'http-status': true,
  'bad-body': true,
  aborted: true,
});
const ACTIVATION_KINDS = members<ActivationKind>({ switch: true, rollback: true });
const ACTIVATION_RESULTS = members<ActivationResult>({ completed: true, failed: true, deferred: true });
const OUTBOUND_STATES = members<OutboundState>({ pending: true, delivered: true, refused: true });
const FAILED_POLICIES = members<FailedPolicyLabel>({ halt: true, 'rollback-and-halt': true });
const ROLLBACK_OUTCOMES = members<RollbackOutcome>({ reverted: true, failed: true });
const DISPATCH_REFUSALS = members<DispatchRefusalLabel>({
  'malformed-json': true,
  'malformed-signature': true,
  'bad-signature': true,
  schema: true,
  'schema-version': true,
  'no-signed-at': true,
  'signed-before-reject-before': true,
  stale: true,
  'from-the-future': true,
  'rollout-id': true,
  'wrong-rollout': true,
  'not-for-this-host': true,
  'wrong-target': true,
  'cache-tampered': true,
  'cache-unreadable': true,
  'cache-missing': true,
  'manifest-unavailable': true,
});
const DISPATCH_TRUST = members<DispatchTrustLabel>({ verified: true, refused: true, unverified: true });

/** A gauge that is in the registry only while its value is known: a made-up 0 would read as a real value. */
class OptionalGauge {
  private readonly gauge: Gauge;

  constructor(
    private readonly registry: Registry,
    private readonly name: string,
    help: string,
  ) {
    this.gauge = new Gauge({ name, help, registers: [] });
  }

  set(value: number | null): void {
    const shown = this.registry.getSingleMetric(this.name) !== undefined;
    if (value === null) {
      if (shown) this.registry.removeSingleMetric(this.name);
      return;
    }
    this.gauge.set(value);
    if (!shown) this.registry.registerMetric(this.gauge);
  }
}

/**
 * The agent's own Prometheus registry (never the global one, which any
 * dependency could write to). Counters and the histogram are recorded where
 * things happen; gauges are set from live state just before each scrape.
 */
@Injectable()
export class MetricsService {
  private readonly registry = new Registry();
  private readonly heartbeats: Counter<'result'>;
  private readonly heartbeatLatency: Histogram;
  private readonly activations: Counter<'kind' | 'outcome'>;
  private readonly consecutiveFailures: Gauge;
  private readonly lastSuccess: OptionalGauge;
  private readonly clockSkew: OptionalGauge;
  private readonly outbound: Gauge<'state'>;
  private readonly replayed: Counter;
  private readonly reducerQueueDepth: Gauge;
  private readonly rollouts: Gauge<'state'>;
  private readonly certExpiry: OptionalGauge;
  private readonly eventLogFailures: Counter;
  private readonly eventLogLastFailure: OptionalGauge;
  private readonly eventLogFailing: Gauge;
  private readonly probeResults: Counter<'probe' | 'status'>;
  private readonly probeDuration: Histogram<'probe'>;
  private readonly rolloutsFailed: Counter<'policy'>;
  private readonly rollbacks: Counter<'outcome'>;
  private readonly dispatchTrust: Counter<'verdict'>;
  private readonly dispatchRefusals: Counter<'reason'>;

  constructor(loopDelay: LoopDelaySampler) {
    const registers = [this.registry];
    registerProcessMetrics(this.registry, loopDelay);

    this.heartbeats = new Counter({
      name: `${METRIC_PREFIX}heartbeats_total`,
      help: 'Steady heartbeats sent to the control plane, by result: ok or the failure kind (the boot-recovery handshake is not counted)',
      labelNames: ['result'],
      registers,
    });
    // Every series exists from the start, so rate() sees the first failure of a kind.
    for (const result of HEARTBEAT_RESULTS) this.heartbeats.inc({ result }, 0);
    this.heartbeatLatency = new Histogram({
      name: `${METRIC_PREFIX}heartbeat_duration_seconds`,
      help: 'Time from sending a steady heartbeat to its outcome, success or failure',
      buckets: HEARTBEAT_LATENCY_BUCKETS,
      registers,
    });
    this.activations = new Counter({
      name: `${METRIC_PREFIX}activations_total`,
      help: 'Finished activations, by kind (switch or rollback) and outcome (completed, deferred, failed)',
      labelNames: ['kind', 'outcome'],
      registers,
    });
    for (const kind of ACTIVATION_KINDS) {
      for (const outcome of ACTIVATION_RESULTS) this.activations.inc({ kind, outcome }, 0);
    }

    this.consecutiveFailures = new Gauge({
      name: `${METRIC_PREFIX}heartbeat_consecutive_failures`,
      help: 'Heartbeats (the boot handshake included) that failed in a row; 0 after a success',
      registers,
    });
    this.lastSuccess = new OptionalGauge(
      this.registry,
      `${METRIC_PREFIX}heartbeat_last_success_timestamp_seconds`,
      'Unix time of the last successful heartbeat; absent before the first',
    );
    this.clockSkew = new OptionalGauge(
      this.registry,
      `${METRIC_PREFIX}clock_skew_seconds`,
      "Seconds the control plane's clock is ahead of ours (negative: behind), from its Date header, ±1 s; absent before its first answer",
    );
    this.outbound = new Gauge({
      name: `${METRIC_PREFIX}outbound_events`,
      help: 'Events in the durable event log, by delivery state (pending, delivered, refused)',
      labelNames: ['state'],
      registers,
    });
    this.replayed = new Counter({
      name: `${METRIC_PREFIX}replayed_events_total`,
      help: 'Logged events resent because the control plane asked for a replay (X-Nixfleet-Replay-From) and accepted',
      registers,
    });
    this.reducerQueueDepth = new Gauge({
      name: `${METRIC_PREFIX}reducer_queue_depth`,
      help: 'Inputs waiting for the rollout state machine',
      registers,
    });
    this.rollouts = new Gauge({
      name: `${METRIC_PREFIX}rollouts`,
      help: 'Rollouts the agent holds, by state',
      labelNames: ['state'],
      registers,
    });
    this.certExpiry = new OptionalGauge(
      this.registry,
      `${METRIC_PREFIX}client_certificate_expiry_seconds`,
      'Seconds until the mTLS client certificate expires (negative once expired); absent without a client certificate',
    );
    this.eventLogFailures = new Counter({
      name: `${METRIC_PREFIX}event_log_append_failures_total`,
      help: "Failed writes to the event log, each an append of one transition's events or a delivery mark, however many records it held: a full disk, an I/O error, a read-only file system",
      registers,
    });
    this.eventLogLastFailure = new OptionalGauge(
      this.registry,
      `${METRIC_PREFIX}event_log_last_append_failure_timestamp_seconds`,
      'Unix time of the last failed event-log append; absent while none failed since start (the error text is in /status eventLog)',
    );
    this.eventLogFailing = new Gauge({
      name: `${METRIC_PREFIX}event_log_append_failing`,
      help: '1 while event-log appends fail (from the first failure until a write works again), else 0',
      registers,
    });
    this.probeResults = new Counter({
      name: `${METRIC_PREFIX}probe_results_total`,
      help: 'Health-probe runs, by probe name and result (pass or fail); every run counts, not only changes',
      labelNames: ['probe', 'status'],
      registers,
    });
    this.probeDuration = new Histogram({
      name: `${METRIC_PREFIX}probe_duration_seconds`,
      help: 'Time a health-probe run took, by probe name, up to its timeout',
      labelNames: ['probe'],
      buckets: PROBE_DURATION_BUCKETS,
      registers,
    });
    this.rolloutsFailed = new Counter({
      name: `${METRIC_PREFIX}rollouts_failed_total`,
      help: 'Rollouts this agent failed (a failed activation or an enforce probe failing past the threshold), by the policy applied',
      labelNames: ['policy'],
      registers,
    });
    for (const policy of FAILED_POLICIES) this.rolloutsFailed.inc({ policy }, 0);
    this.rollbacks = new Counter({
      name: `${METRIC_PREFIX}rollbacks_total`,
      help: 'Finished rollbacks, by outcome: reverted (the host runs the closure from before the dispatch) or failed',
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of ROLLBACK_OUTCOMES) this.rollbacks.inc({ outcome }, 0);
    this.dispatchTrust = new Counter({
      name: `${METRIC_PREFIX}dispatch_trust_checks_total`,
      help: "Dispatches (and resumed activations) judged against the fleet CI's signed manifest, by verdict: verified, refused, or unverified (--allow-unsigned without a trust file)",
      labelNames: ['verdict'],
      registers,
    });
    for (const verdict of DISPATCH_TRUST) this.dispatchTrust.inc({ verdict }, 0);
    this.dispatchRefusals = new Counter({
      name: `${METRIC_PREFIX}dispatch_refusals_total`,
      help: 'Dispatches not acted on because their signed manifest failed a check, by the check that failed (the detail is in /status trust.lastFailure)',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of DISPATCH_REFUSALS) this.dispatchRefusals.inc({ reason }, 0);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  recordHeartbeat(result: HeartbeatResult, seconds: number): void {
    this.heartbeats.inc({ result });
    this.heartbeatLatency.observe(seconds);
  }

  recordReplayed(): void {
    this.replayed.inc();
  }

  recordActivation(kind: ActivationKind, outcome: ActivationResult): void {
    this.activations.inc({ kind, outcome });
  }

  recordProbeRun(probe: string, status: ProbeResultLabel, seconds: number): void {
    this.probeResults.inc({ probe, status });
    this.probeDuration.observe({ probe }, seconds);
  }

  recordRolloutFailed(policy: FailedPolicyLabel): void {
    this.rolloutsFailed.inc({ policy });
  }

  recordRollback(outcome: RollbackOutcome): void {
    this.rollbacks.inc({ outcome });
  }

  recordDispatchTrust(verdict: DispatchTrustLabel, refusal: DispatchRefusalLabel | null = null): void {
    this.dispatchTrust.inc({ verdict });
    if (refusal !== null) this.dispatchRefusals.inc({ reason: refusal });
  }

  recordEventLogAppendFailure(atUnixSecs: number): void {
    this.eventLogFailures.inc();
    this.eventLogLastFailure.set(atUnixSecs);
  }

  /** The exposition text, with the gauges set from `live` first. */
  async scrape(live: LiveState): Promise<string> {
    this.consecutiveFailures.set(live.consecutiveFailures);
    this.lastSuccess.set(live.lastSuccessUnixSecs);
    this.clockSkew.set(live.clockSkewSecs);
    for (const state of OUTBOUND_STATES) this.outbound.set({ state }, live.outbound[state]);
    this.reducerQueueDepth.set(live.reducerQueueDepth);
    const byState = new Map<RolloutState, number>(ROLLOUT_STATES.map((s) => [s, 0]));
    for (const s of live.rolloutStates) byState.set(s, (byState.get(s) ?? 0) + 1);
    for (const [state, count] of byState) this.rollouts.set({ state }, count);
    this.certExpiry.set(live.clientCertSecondsToExpiry);
    this.eventLogFailing.set(live.eventLogFailing ? 1 : 0);
    return this.registry.metrics();
  }
}
