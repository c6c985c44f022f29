import { type BeforeApplicationShutdown, Inject, Injectable, Logger, type OnApplicationBootstrap } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { RANDOM, type RandomSource } from '../clock/random';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { JobRuntime } from '../jobs/job-runtime.service';
import { failed, type JobHandle, type JobResult, ok } from '../jobs/job.types';
import { BootGate } from '../lifecycle/boot-gate';
import { MetricsService } from '../metrics/metrics.service';
import { type EffectOf, REDUCER_INPUT, REDUCER_POLICY, type ReducerInputPort, type ResetProbeCachePort } from '../reducer/reducer.ports';
import { EventsNotDurableError, ReducerClosedError } from '../reducer/reducer.service';
import type { DeclaredProbe, Policy, ReducerState, RolloutEntry } from '../reducer/reducer.types';
import { submitUntilDurable } from '../reducer/submit-until-durable';
import { HEALTH_GATE, type HealthGateSource } from './health-gate';
import { loadHealthChecks, systemdFailedUnitsDeclaration } from './health-checks.file';
import { ProbeChecker } from './probe-checker';
import type { ProbeDeclaration, ProbeOutcome, ProbeSpec } from './probe.types';
import type { HealthChecksFileStatus, ProbeRunnerStatus, ProbeRunView } from './probes.status.types';

/** One declared probe of the active rollout, and what its runs saw. */
interface Runner {
  readonly declaration: ProbeDeclaration;
  /** null for a `disabled` probe: declared, never run. */
  readonly job: JobHandle | null;
  readonly view: ProbeRunView;
}

/** The probes of the one rollout being judged: upstream's runner set, replaced whole by each reset. */
interface ActiveSet {
  readonly rolloutId: string;
  readonly generation: number;
  readonly runners: Map<string, Runner>;
}

/**
 * The probe runners (PROTOCOL §10): serves the reducer's ResetProbeCache
 * port. A reset stops the tickers of the previous rollout, re-reads the
 * health-checks file (a new closure brings a new one), declares the topology
 * and starts one job per probe on the job runtime; each result goes to the
 * reducer as an input. Results of a run that began before a reset are
 * dropped: a previous closure's pass must never satisfy the new gate.
 */
@Injectable()
export class ProbeRunnerService implements ResetProbeCachePort, OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(ProbeRunnerService.name);
  /** Resets run one at a time, in the order the reducer fired them. Never rejects. */
  private chain: Promise<void> = Promise.resolve();
  /** Rollouts with a reset queued and not started yet: a second request for one adds nothing. */
  private readonly queued = new Set<string>();
  private active: ActiveSet | null = null;
  private generation = 0;
  private file: HealthChecksFileStatus;
  private missingSaid = false;
  /** Aborted at shutdown: ends the wait of a topology the disk would not take. */
  private readonly stopping = new AbortController();

  constructor(
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    @Inject(REDUCER_INPUT) private readonly reducer: ReducerInputPort,
    @Inject(HEALTH_GATE) private readonly healthGate: HealthGateSource,
    @Inject(REDUCER_POLICY) private readonly policy: Policy,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(RANDOM) private readonly random: RandomSource,
    private readonly runtime: JobRuntime,
    private readonly checker: ProbeChecker,
    private readonly metrics: MetricsService,
    private readonly bootGate: BootGate,
  ) {
    this.file = { path: config.healthChecksFile, state: 'not-read', readAt: null, problems: [] };
  }

  /** The reducer's effect: queued, never awaited by its consumer. */
  handle(effect: EffectOf<'ResetProbeCache'>): void {
    this.enqueue(effect.rolloutId, 'reset by the reducer');
  }

  onApplicationBootstrap(): void {
    // A rollout rebuilt Soaking from the log gets no reset when the CP is down
    // at boot (no snapshot): without this its probes would never run again.
    this.bootGate
      .whenOpen()
      .then(() => {
        const newest = newestSoaking(this.reducer.current());
        if (newest !== undefined && this.active?.rolloutId !== newest.rolloutId) this.enqueue(newest.rolloutId, 'resumed at start');
      })
      .catch((err: unknown) => this.logger.error(`probes of soaking rollouts not resumed: ${String(err)}`));
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.stopping.abort();
    await this.chain;
  }

  /** Resolves once every reset queued so far has run (tests, and the status of a settled agent). */
  async settled(): Promise<void> {
    for (let seen = this.chain; ; seen = this.chain) {
      await seen;
      if (seen === this.chain) return;
    }
  }

  /** Runs every running probe of the active rollout now, out of schedule, and waits for them (tests, an operator's request). */
  async runNow(): Promise<void> {
    const set = this.active;
    if (set === null) return;
    // A run-once probe that has had its run stays done.
    const due = [...set.runners.values()].flatMap((r) => (r.job !== null && r.job.status().state !== 'disabled' ? [r.job] : []));
    await Promise.all(due.map((job) => job.runNow()));
  }

  status(): ProbeRunnerStatus {
    const set = this.active;
    return {
      healthChecksFile: { ...this.file, problems: [...this.file.problems] },
      activeRollout: set?.rolloutId ?? null,
      runners: set === null ? [] : [...set.runners.values()].map((r) => ({ ...r.view })),
    };
  }

  private enqueue(rolloutId: string, why: string): void {
    if (this.queued.has(rolloutId)) return;
    this.queued.add(rolloutId);
    this.chain = this.chain
      .then(() => {
        this.queued.delete(rolloutId);
        return this.reset(rolloutId, why);
      })
      .catch((err: unknown) =>
        this.logger.error(`probe reset for ${rolloutId} failed: ${err instanceof Error ? err.message : String(err)}`, { rolloutId }),
      );
  }

  private async reset(rolloutId: string, why: string): Promise<void> {
    if (this.stopping.signal.aborted) return;
    const entry = this.reducer.current().rollouts[rolloutId];
    if (entry === undefined || entry.state !== 'Soaking') {
      // Only the rollout being judged can be stopped by its own reset; another rollout's runners stay.
      if (this.active?.rolloutId === rolloutId) {
        await this.stopActive();
        this.logger.log(`probes of ${rolloutId} stopped: the rollout is ${entry?.state ?? 'no longer known'}`, {
          rolloutId,
          state: entry?.state ?? null,
        });
      }
      return;
    }
    // One rollout's probes run at a time: the newest soaking one's. An older
    // one still Soaking (a newer dispatch replaced it) takes nothing from it.
    const newest = newestSoaking(this.reducer.current());
    if (newest !== undefined && newest.rolloutId !== rolloutId) {
      if (this.active?.rolloutId === rolloutId) await this.stopActive();
      this.logger.debug(`probe reset for ${rolloutId} ignored: ${newest.rolloutId} is the newer soaking rollout`, {
        rolloutId,
        newerRolloutId: newest.rolloutId,
      });
      return;
    }
    await this.stopActive();
    const generation = ++this.generation;
    const declarations = await this.declarations(rolloutId);
    const set: ActiveSet = { rolloutId, generation, runners: new Map() };
    this.active = set;
    for (const d of declarations) set.runners.set(d.name, { declaration: d, job: null, view: initialView(d) });

    const probes: DeclaredProbe[] = declarations.map((d) => ({ probeName: d.name, kind: kindLabel(d.spec), mode: d.mode }));
    const declared = await this.submitTopology(rolloutId, probes);
    if (!declared || this.active !== set) {
      if (this.active === set) this.active = null;
      return;
    }
    for (const d of declarations) {
      if (d.mode === 'disabled') continue;
      const runner = set.runners.get(d.name);
      if (runner === undefined) continue;
      set.runners.set(d.name, { ...runner, job: this.startJob(set, d) });
    }
    this.logger.log(`probes of ${rolloutId} (${why}): ${describeTopology(declarations)}`, {
      rolloutId,
      probes: declarations.map((d) => d.name),
    });
    for (const d of declarations) {
      if (d.mode !== 'enforce' || d.runOnce || d.intervalMs <= this.policy.sustainedFailureThresholdSecs * 1000) continue;
      this.logger.warn(
        `probe ${d.name} runs every ${d.intervalMs / 1000} s, longer than the --probe-failure-threshold of ${this.policy.sustainedFailureThresholdSecs} s: a single failing run fails the rollout`,
        { rolloutId, probe: d.name, intervalSecs: d.intervalMs / 1000 },
      );
    }
  }

  /** Reads the file (and the signed manifest's gate, when one is verified) into declarations. */
  private async declarations(rolloutId: string): Promise<ProbeDeclaration[]> {
    const load = await loadHealthChecks(this.config.healthChecksFile);
    const readAt = this.clock.now().toISOString();
    let declarations: ProbeDeclaration[] = [];
    switch (load.kind) {
      case 'missing':
        this.file = { path: this.config.healthChecksFile, state: 'missing', readAt, problems: [] };
        if (!this.missingSaid) {
          this.missingSaid = true;
          this.logger.log(
            `no health-checks file at ${this.config.healthChecksFile}: no probes; rollouts are judged by their soak time alone`,
          );
        }
        break;
      case 'loaded':
        this.file = {
          path: this.config.healthChecksFile,
          state: load.problems.length === 0 ? 'loaded' : 'invalid',
          readAt,
          problems: [...load.problems],
        };
        for (const problem of load.problems) this.logger.warn(problem);
        declarations = [...load.probes];
        break;
      default: {
        const never: never = load;
        return never;
      }
    }
    const gate = await this.healthGate.gateFor(rolloutId);
    if (gate?.systemdFailedUnits !== undefined) declarations.push(systemdFailedUnitsDeclaration(gate.systemdFailedUnits.max));
    // The system CAs are read afresh for the new closure, and only when an https probe needs them.
    await this.checker.refresh(declarations.some((d) => d.spec.kind === 'http' && d.spec.url.startsWith('https:')));
    return declarations;
  }

  /** True once the reducer took the topology; false when the rollout moved on or the agent stops. */
  private async submitTopology(rolloutId: string, probes: readonly DeclaredProbe[]): Promise<boolean> {
    try {
      const result = await submitUntilDurable(
        this.reducer,
        { type: 'ProbeTopologyDeclared', rolloutId, probes },
        {
          signal: this.stopping.signal,
          random: this.random,
          onHeld: (err, failures, retryInMs) => {
            if (failures === 1) {
              this.logger.error(
                `probe topology of ${rolloutId} held: ${err.message}; the rollout cannot converge until it is recorded; retried in ${(retryInMs / 1000).toFixed(1)} s`,
                { rolloutId },
              );
            }
          },
        },
      );
      return result !== null && result.rejected === undefined;
    } catch (err) {
      if (!(err instanceof ReducerClosedError))
        this.logger.error(`probe topology of ${rolloutId} not submitted: ${(err as Error).message}`, { rolloutId });
      return false;
    }
  }

  private startJob(set: ActiveSet, d: ProbeDeclaration): JobHandle {
    return this.runtime.register({
      name: jobName(d.name),
      afterBoot: true,
      // No jitter: §10 floors intervals at 5 s, and a spread would run some below it; probes are local, no herd to spread.
      schedule: { kind: 'every', intervalMs: d.intervalMs, firstAfterMs: 0 },
      // A result the reducer could not record is simply retried at the probe's own pace.
      backoff: { firstMs: d.intervalMs, capMs: d.intervalMs },
      onShutdown: { kind: 'abort' },
      run: ({ signal }) => this.runProbe(set, d, signal),
    });
  }

  private async runProbe(set: ActiveSet, d: ProbeDeclaration, signal: AbortSignal): Promise<JobResult> {
    const runner = set.runners.get(d.name);
    if (this.active !== set || runner === undefined) return ok();
    if (this.reducer.current().rollouts[set.rolloutId]?.state !== 'Soaking') {
      // The verdict is in; the reducer's own reset is on its way, this only makes sure.
      this.enqueue(set.rolloutId, 'the rollout left Soaking');
      return ok();
    }
    const startedAt = this.clock.now().toISOString();
    runner.view.running = true;
    let outcome: ProbeOutcome;
    try {
      outcome = await this.checker.check(d.spec, signal);
    } finally {
      runner.view.running = false;
    }
    if (signal.aborted || this.active !== set) return ok();

    const previous = runner.view.lastRunResult;
    Object.assign(runner.view, {
      lastRunAt: startedAt,
      lastDurationMs: Math.round(outcome.durationMs),
      lastRunResult: outcome.status,
      lastRunReason: outcome.failureReason ?? null,
      runs: runner.view.runs + 1,
    });
    this.metrics.recordProbeRun(d.name, outcome.status, outcome.durationMs / 1000);
    if (outcome.status !== previous) this.sayChange(set.rolloutId, d, outcome, previous);

    try {
      const result = await this.reducer.submit({
        type: 'ProbeResult',
        rolloutId: set.rolloutId,
        probeName: d.name,
        status: outcome.status,
        ...(outcome.failureReason !== undefined ? { failureReason: outcome.failureReason } : {}),
      });
      if (result.rejected !== undefined) return ok(); // the rollout moved on; the reducer said why
    } catch (err) {
      if (err instanceof ReducerClosedError) return ok();
      if (err instanceof EventsNotDurableError) return failed(`result of probe ${d.name} not recorded: ${err.message}`);
      throw err;
    }
    // Once per rollout: a recorded result is the run; a reset starts it again.
    if (d.runOnce) set.runners.get(d.name)?.job?.disable();
    return ok();
  }

  private sayChange(rolloutId: string, d: ProbeDeclaration, outcome: ProbeOutcome, previous: 'pass' | 'fail' | null): void {
    // A refused declaration was said once, at the reset, in its own line.
    if (d.spec.kind === 'invalid') return;
    const what = `probe ${d.name} (${d.mode}) of ${rolloutId}`;
    const fields = { rolloutId, probe: d.name, mode: d.mode, result: outcome.status, previous };
    if (outcome.status === 'pass') {
      this.logger.log(previous === null ? `${what} passes` : `${what} passes again`, fields);
    } else {
      this.logger.warn(`${what} fails: ${outcome.failureReason ?? 'no reason given'}`, {
        ...fields,
        reason: outcome.failureReason ?? null,
      });
    }
  }

  private async stopActive(): Promise<void> {
    const set = this.active;
    if (set === null) return;
    this.active = null;
    await Promise.all(
      [...set.runners.values()].filter((r) => r.job !== null).map((r) => this.runtime.unregister(jobName(r.declaration.name))),
    );
  }
}

/** The soaking rollout dispatched last (by time, then id): the one whose probes run. */
function newestSoaking(state: ReducerState): RolloutEntry | undefined {
  let newest: RolloutEntry | undefined;
  for (const e of Object.values(state.rollouts)) {
    if (e.state !== 'Soaking') continue;
    const later =
      newest === undefined ||
      Date.parse(e.dispatchedAt) > Date.parse(newest.dispatchedAt) ||
      (Date.parse(e.dispatchedAt) === Date.parse(newest.dispatchedAt) && e.rolloutId > newest.rolloutId);
    if (later) newest = e;
  }
  return newest;
}

/** A job name per probe; one rollout's probes run at a time, so the probe name is enough. */
function jobName(probe: string): string {
  return `probe:${probe}`;
}

/** The kind the topology reports: what the file said, even for a declaration we refused. */
function kindLabel(spec: ProbeSpec): string {
  switch (spec.kind) {
    case 'http':
    case 'tcp':
    case 'exec':
    case 'systemd-failed-units':
      return spec.kind;
    case 'invalid':
      return spec.declaredKind;
    default: {
      const never: never = spec;
      return never;
    }
  }
}

function initialView(d: ProbeDeclaration): ProbeRunView {
  return {
    name: d.name,
    kind: kindLabel(d.spec),
    mode: d.mode,
    intervalSecs: d.intervalMs / 1000,
    runOnce: d.runOnce,
    problem: d.spec.kind === 'invalid' ? d.spec.problem : null,
    running: false,
    runs: 0,
    lastRunAt: null,
    lastDurationMs: null,
    lastRunResult: null,
    lastRunReason: null,
  };
}

function describeTopology(declarations: readonly ProbeDeclaration[]): string {
  if (declarations.length === 0) return 'none declared';
  return declarations
    .map(
      (d) =>
        `${d.name} (${kindLabel(d.spec)}, ${d.mode}${d.mode === 'disabled' ? '' : d.runOnce ? ', once' : `, every ${d.intervalMs / 1000} s`})`,
    )
    .join(', ');
}
