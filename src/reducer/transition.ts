import type { AgentEvent, UnnumberedEvent } from '../protocol/events.wire';
import type { FailurePolicy, RolloutState } from '../protocol/rollout';
import type { HostRolloutSnapshot } from '../protocol/snapshot.wire';
import {
  DEFAULT_SOAK_SECS,
  type DeclaredProbe,
  type Effect,
  type LogMeta,
  type Policy,
  type ProbeEntry,
  type ProbeStatus,
  type ReducerInput,
  type ReducerState,
  type RolloutEntry,
  type TransitionResult,
} from './reducer.types';

type InputOf<T extends ReducerInput['type']> = Extract<ReducerInput, { type: T }>;
type RolloutInput = Exclude<ReducerInput, { type: 'Tick' | 'Snapshot' }>;

/** What one rollout-level step produces before its events are numbered. */
type Step =
  | {
      readonly entry: RolloutEntry;
      readonly events: readonly UnnumberedEvent[];
      /** Run after the events: an event is logged before the action it reports on is taken. */
      readonly after?: readonly Effect[];
      /** A rule the reducer applied on its own (TransitionResult.notice). */
      readonly notice?: string;
    }
  | { readonly rejected: string };
type Done = Exclude<Step, { rejected: string }>;

/**
 * The reducer's state machine (PROTOCOL §5). Pure and total: every input
 * yields a result; illegal ones come back with `rejected` and the state as it was.
 */
export function transition(state: ReducerState, input: ReducerInput, now: Date, policy: Policy): TransitionResult {
  const at = now.toISOString();
  switch (input.type) {
    case 'Activate':
      return activate(state, input, at);
    case 'ActivationStarted':
      return step(state, input, 'Activating', (e) => ({
        entry: { ...e, activationStartedAt: at },
        events: [{ kind: 'ActivationStarted', startedAt: at, switchMethod: input.switchMethod }],
      }));
    case 'ActivationCompleted':
      return step(state, input, 'Activating', (e) => ({
        entry: {
          ...e,
          state: 'Soaking',
          activationCompletedAt: at,
          currentClosure: input.observedCurrentClosure ?? e.currentClosure,
        },
        events: [
          {
            kind: 'ActivationCompleted',
            observedCurrentClosure: input.observedCurrentClosure,
            exitCode: input.exitCode,
            completedAt: at,
          },
        ],
        // Probe runners must not carry results from before the switch into the soak.
        after: [{ type: 'ResetProbeCache', rolloutId: e.rolloutId }],
      }));
    case 'ActivationDeferred':
      return step(state, input, 'Activating', (e) => ({
        entry: { ...e, state: 'Deferred' },
        events: [{ kind: 'ActivationDeferred', component: input.component, deferredAt: at }],
      }));
    case 'ActivationFailed':
      return step(state, input, 'Activating', (e) => {
        const failure = applyFailurePolicy(e, policy);
        return {
          entry: { ...e, state: 'Failed', failedAt: at, policyApplied: failure.policyApplied },
          events: [{ kind: 'ActivationFailed', exitCode: input.exitCode, stderrTail: input.stderrTail, failedAt: at }],
          after: failure.effects,
          notice: failure.notice,
        };
      });
    case 'ProbeTopologyDeclared':
      return step(state, input, 'Soaking', (e) => {
        // Runners declare after every reset, and run every probe afresh: what
        // was observed before counts again only once a new result confirms it.
        // The CP already holds an unchanged topology.
        if (e.probesDeclaredAt !== undefined && sameTopology(e.probes, input.probes)) {
          const probes = staleProbes(e.probes);
          return { entry: probes === e.probes ? e : { ...e, probes }, events: [] };
        }
        return {
          entry: { ...e, probes: staleProbes(mergeTopology(e.probes, input.probes)), probesDeclaredAt: at },
          events: [
            {
              kind: 'ProbeTopologyDeclared',
              probes: input.probes.map((p) => ({ probeName: p.probeName, kind: p.kind, mode: p.mode })),
              declaredAt: at,
            },
          ],
        };
      });
    case 'ProbeResult':
      return step(state, input, 'Soaking', (e) => probeResult(e, input, at));
    case 'RollbackCompleted':
      return step(state, input, 'Failed', (e) => ({
        // §11: a rollback that failed is reported, and the rollout stays Failed.
        entry: {
          ...e,
          ...(input.exitCode === 0 ? { state: 'Reverted' as const, revertedAt: at, revertedToClosure: input.revertedToClosure } : {}),
          rollback: { toClosure: input.revertedToClosure, exitCode: input.exitCode, completedAt: at },
        },
        events: [
          {
            kind: 'RollbackComplete',
            revertedToClosure: input.revertedToClosure,
            exitCode: input.exitCode,
            completedAt: at,
          },
        ],
      }));
    case 'Tick':
      return tick(state, input, now, policy);
    case 'Snapshot':
      return applySnapshot(state, input.snapshot, now);
    default: {
      const unreachable: never = input;
      return unreachable;
    }
  }
}

function activate(state: ReducerState, input: InputOf<'Activate'>, at: string): TransitionResult {
  const existing = lookup(state, input.rolloutId);
  // A Pending entry comes from a snapshot: the CP knows the rollout, we have not acted on it yet.
  if (existing && existing.state !== 'Pending') {
    return reject(state, illegal(input.type, input.rolloutId, existing.state));
  }
  // A new attempt: nothing observed of an earlier one (its probe results, its
  // verdict) may judge this one. Only the seqs go on: the CP dedups on them.
  const entry: RolloutEntry = {
    probes: {},
    rolloutId: input.rolloutId,
    channel: input.channel ?? channelOf(input.rolloutId),
    state: 'Activating',
    targetClosure: input.targetClosure,
    currentClosureAtDispatch: input.currentClosure ?? undefined,
    dispatchedAt: input.dispatchedAt,
    dispatchAckedAt: at,
    soakDueAt: input.soakDueAt,
    lastEventSeq: existing?.lastEventSeq ?? 0,
  };
  return commit(state, {
    entry,
    events: [{ kind: 'DispatchAck', currentClosureAtDispatch: input.currentClosure, receivedAt: at }],
    after: [{ type: 'FireSwitch', rolloutId: input.rolloutId, targetClosure: input.targetClosure }],
  });
}

function probeResult(e: RolloutEntry, input: InputOf<'ProbeResult'>, at: string): Step {
  const probe = e.probes[input.probeName];
  if (!Object.hasOwn(e.probes, input.probeName) || probe === undefined) {
    // Without a declared probe we do not know its mode, and the CP could not place the result.
    return { rejected: `ProbeResult for ${e.rolloutId} names undeclared probe "${input.probeName}"` };
  }
  // ProbeResult goes out on a change of status only: a probe runs every few
  // seconds, and repeating an unchanged status would flood the CP while telling
  // it nothing; the streak's start (ProbeFailureFirst) and the verdict (Failed,
  // Converged) carry the timing.
  if (probe.lastStatus === input.status) {
    // Nothing new for the CP; a result from before a reset is confirmed.
    if (probe.stale !== true) return { entry: e, events: [] };
    const { stale: _confirmed, ...fresh } = probe;
    return { entry: { ...e, probes: { ...e.probes, [input.probeName]: fresh } }, events: [] };
  }

  const events: UnnumberedEvent[] = [];
  const mode = probe.mode;
  if (probe.firstObservedAt === undefined) {
    events.push({ kind: 'ProbeObservedFirst', probeName: input.probeName, mode, observedAt: at });
  }
  events.push({
    kind: 'ProbeResult',
    probeName: input.probeName,
    mode,
    status: input.status,
    observedAt: at,
    ...(input.failureReason !== undefined ? { failureReason: input.failureReason } : {}),
  });
  const next = probeAfterResult(probe, input.status, at, input.failureReason);
  if (input.status === 'fail' && probe.firstFailedAt === undefined) {
    events.push({ kind: 'ProbeFailureFirst', probeName: input.probeName, mode, firstFailedAt: at });
  }
  return { entry: { ...e, probes: { ...e.probes, [input.probeName]: next } }, events };
}

/** A probe after a result that changed its status; `rebuildFromLog` folds a logged ProbeResult the same way. */
export function probeAfterResult(probe: ProbeEntry, status: ProbeStatus, at: string, failureReason: string | undefined): ProbeEntry {
  // A pass ends the failure streak and its reason: built afresh, not spread, so no stale key survives.
  return {
    kind: probe.kind,
    mode: probe.mode,
    lastStatus: status,
    statusSince: at,
    firstObservedAt: probe.firstObservedAt ?? at,
    ...(status === 'fail' ? { firstFailedAt: probe.firstFailedAt ?? at } : {}),
    ...(status === 'fail' && failureReason !== undefined ? { failureReason } : {}),
  };
}

/**
 * A re-declared probe keeps what we observed of it: runners re-declare after
 * every ResetProbeCache, and losing `firstFailedAt` then would restart the
 * sustained-failure timer for ever. Probes no longer declared are dropped.
 */
export function mergeTopology(
  current: Readonly<Record<string, ProbeEntry>>,
  declared: readonly DeclaredProbe[],
): Readonly<Record<string, ProbeEntry>> {
  const next: Record<string, ProbeEntry> = {};
  for (const p of declared) {
    const seen = Object.hasOwn(current, p.probeName) ? current[p.probeName] : undefined;
    next[p.probeName] = { ...seen, kind: p.kind, mode: p.mode };
  }
  return next;
}

/**
 * Every probe that has a result, marked as from before now (a reset, a
 * restart); the same object back when none has one, so a quiet re-declaration
 * changes nothing.
 */
export function staleProbes(probes: Readonly<Record<string, ProbeEntry>>): Readonly<Record<string, ProbeEntry>> {
  const withResult = Object.entries(probes).filter(([, p]) => p.lastStatus !== undefined && p.stale !== true);
  if (withResult.length === 0) return probes;
  const next: Record<string, ProbeEntry> = { ...probes };
  for (const [name, p] of withResult) next[name] = { ...p, stale: true };
  return next;
}

/** The same probes with the same kinds and modes, whatever their order. */
function sameTopology(current: Readonly<Record<string, ProbeEntry>>, declared: readonly DeclaredProbe[]): boolean {
  if (Object.keys(current).length !== declared.length) return false;
  return declared.every((p) => {
    const seen = Object.hasOwn(current, p.probeName) ? current[p.probeName] : undefined;
    return seen !== undefined && seen.kind === p.kind && seen.mode === p.mode;
  });
}

function tick(state: ReducerState, input: InputOf<'Tick'>, now: Date, policy: Policy): TransitionResult {
  let rollouts = state.rollouts;
  const effects: Effect[] = [];
  const notices: string[] = [];
  for (const id of Object.keys(state.rollouts).sort()) {
    const entry = state.rollouts[id];
    if (entry === undefined || entry.state !== 'Soaking') continue;
    const s = soakVerdict(entry, input.currentClosure, now, policy);
    if (s === undefined) continue;
    const done = number(s);
    rollouts = { ...rollouts, [id]: done.entry };
    effects.push(...done.effects);
    if (s.notice !== undefined) notices.push(s.notice);
  }
  // The same state object back when nothing moved: a quiet tick is the normal case.
  const next = { state: rollouts === state.rollouts ? state : { rollouts }, effects };
  return notices.length === 0 ? next : { ...next, notice: notices.join('; ') };
}

/** A Soaking rollout's verdict on a tick, or undefined while it keeps soaking. */
function soakVerdict(e: RolloutEntry, currentClosure: string | null, now: Date, policy: Policy): Done | undefined {
  const at = now.toISOString();
  const enforced = Object.entries(e.probes).filter(([, p]) => p.mode === 'enforce');
  const onTarget = currentClosure !== null && e.targetClosure !== '' && currentClosure === e.targetClosure;

  const thresholdMs = policy.sustainedFailureThresholdSecs * 1000;
  // A result from before a reset or a restart is not evidence about the host
  // now: the streak still counts from its first failure, but the verdict waits
  // for the next result.
  const sustained = enforced
    .map(([name, p]) => ({ name, failingMs: p.lastStatus === 'fail' && p.stale !== true ? sinceMs(p.firstFailedAt, now) : undefined }))
    .filter((f): f is { name: string; failingMs: number } => f.failingMs !== undefined && f.failingMs >= thresholdMs);
  // Only while the host runs the target: a host that moved on (a newer rollout,
  // an operator) is not this rollout's to fail, nor to roll back under it.
  if (sustained.length > 0 && onTarget) {
    const failure = applyFailurePolicy(e, policy);
    return {
      entry: { ...e, state: 'Failed', failedAt: at, policyApplied: failure.policyApplied },
      events: [
        {
          kind: 'Failed',
          failedAt: at,
          // The longest streak: the one that has been breaching the threshold longest.
          sustainedDurationSecs: Math.floor(Math.max(...sustained.map((f) => f.failingMs)) / 1000),
          failingProbes: sustained.map((f) => f.name).sort(),
          policyApplied: failure.policyApplied,
        },
      ],
      // The runners stop probing a rollout that has its verdict, before a rollback changes the host under them.
      after: [{ type: 'ResetProbeCache', rolloutId: e.rolloutId }, ...failure.effects],
      notice: failure.notice,
    };
  }

  // No soak due time known: converging would declare a success the CP never scheduled.
  const soakDue = e.soakDueAt !== undefined && Date.parse(e.soakDueAt) <= now.getTime();
  // Until the runners declared the topology, an empty `probes` means "not known yet", not "none".
  const healthy = e.probesDeclaredAt !== undefined && enforced.every(([, p]) => p.lastStatus === 'pass' && p.stale !== true);
  if (soakDue && healthy && onTarget) {
    return {
      entry: { ...e, state: 'Converged', convergedAt: at, currentClosure },
      events: [{ kind: 'Converged', convergedAt: at, currentClosure }],
      after: [{ type: 'ResetProbeCache', rolloutId: e.rolloutId }],
    };
  }
  return undefined;
}

/**
 * What the configured policy amounts to for this rollout. Rollback needs the
 * closure that ran at dispatch; without it, or when that is the target itself
 * (a rollback would change nothing), the agent can only halt, and says so.
 */
function applyFailurePolicy(e: RolloutEntry, policy: Policy): { policyApplied: FailurePolicy; effects: Effect[]; notice?: string } {
  if (policy.onHealthFailure !== 'rollback-and-halt') return { policyApplied: 'halt', effects: [] };
  const to = e.currentClosureAtDispatch;
  if (to === undefined || to === e.targetClosure) {
    const why =
      to === undefined
        ? 'the closure running at dispatch is unknown (/run/current-system was unreadable)'
        : 'the closure recorded at dispatch is the target itself';
    return {
      policyApplied: 'halt',
      effects: [],
      notice: `${e.rolloutId} failed with policy rollback-and-halt, but ${why}: halted instead, the host stays as it is`,
    };
  }
  return { policyApplied: 'rollback-and-halt', effects: [{ type: 'FireRollback', rolloutId: e.rolloutId, toClosure: to }] };
}

function applySnapshot(state: ReducerState, snap: HostRolloutSnapshot, now: Date): TransitionResult {
  const existing = lookup(state, snap.rolloutId);
  // Guard: a snapshot behind our own log describes a past we have moved on
  // from (typically a CP that lost events; replay catches it up). Taking its
  // state would rewind the rollout, so it changes nothing.
  if (existing && snap.lastEventSeq < existing.lastEventSeq) {
    return {
      state,
      effects: [],
      note:
        `Snapshot of ${snap.rolloutId} (${snap.state}, seq ${snap.lastEventSeq}) is older than ` +
        `the local ${existing.state} at seq ${existing.lastEventSeq}; kept the local state`,
    };
  }
  // Optional wire fields the CP omits are ones it does not know: their absence
  // does not erase what we observed ourselves.
  const entry: RolloutEntry = {
    rolloutId: snap.rolloutId,
    channel: snap.channel,
    state: snap.state,
    targetClosure: snap.targetClosure,
    // Ours, read from /run/current-system when the dispatch arrived, wins: a
    // CP that recorded the target there would turn a rollback into a no-op (§11).
    currentClosureAtDispatch: existing?.currentClosureAtDispatch ?? snap.currentClosureAtDispatch,
    currentClosure: snap.currentClosure ?? existing?.currentClosure,
    dispatchedAt: snap.dispatchedAt,
    dispatchAckedAt: snap.dispatchAckedAt ?? existing?.dispatchAckedAt,
    activationStartedAt: snap.activationStartedAt ?? existing?.activationStartedAt,
    activationCompletedAt: snap.activationCompletedAt ?? existing?.activationCompletedAt,
    soakDueAt: snap.soakDueAt ?? existing?.soakDueAt,
    // Guard: never below what we assigned; the CP dedups on seq and would
    // silently drop a new event that re-used one. (The staleness check above
    // already implies it; kept so the invariant does not hang on that check.)
    lastEventSeq: Math.max(existing?.lastEventSeq ?? 0, snap.lastEventSeq),
    probes: existing?.probes ?? {},
    probesDeclaredAt: existing?.probesDeclaredAt,
    failedAt: existing?.failedAt,
    convergedAt: existing?.convergedAt,
    revertedAt: existing?.revertedAt,
    revertedToClosure: existing?.revertedToClosure,
    policyApplied: existing?.policyApplied,
    rollback: existing?.rollback,
  };
  // Ours (§10): a steady heartbeat re-sends the same snapshots every interval;
  // runners re-prime only when the snapshot told the agent something new.
  const changed =
    existing === undefined ||
    existing.state !== entry.state ||
    existing.targetClosure !== entry.targetClosure ||
    existing.currentClosure !== entry.currentClosure;
  const effects: Effect[] = snap.state === 'Pending' || !changed ? [] : [{ type: 'ResetProbeCache', rolloutId: snap.rolloutId }];
  const soak = entry.state === 'Soaking' && entry.soakDueAt === undefined ? derivedSoakDue(entry, now) : undefined;
  if (soak === undefined) return { state: withEntry(state, entry), effects };
  return { state: withEntry(state, { ...entry, soakDueAt: soak.dueAt }), effects, notice: soak.notice };
}

/**
 * A Soaking rollout without a soak due time would never converge: a CP that
 * sends no `soakDueAt` (or a cold snapshot after the agent lost its own)
 * gets the default soak, counted from the activation's completion when the
 * snapshot says when that was, else from now, when the agent first saw it
 * soaking. From `activationCompletedAt` it is the same whenever it is
 * derived again. It goes into the entry, so the `meta` of every later event
 * carries it and a rebuild keeps it; a restart before any such event
 * re-derives a first-sight due time later, never earlier.
 */
function derivedSoakDue(e: RolloutEntry, now: Date): { dueAt: string; notice: string } {
  const completedMs = e.activationCompletedAt === undefined ? Number.NaN : Date.parse(e.activationCompletedAt);
  const fromCompletion = !Number.isNaN(completedMs);
  const dueAt = new Date((fromCompletion ? completedMs : now.getTime()) + DEFAULT_SOAK_SECS * 1000).toISOString();
  const from = fromCompletion
    ? `activationCompletedAt ${e.activationCompletedAt}`
    : `${now.toISOString()}, when the agent first saw it soaking (the snapshot has no activationCompletedAt)`;
  return {
    dueAt,
    notice: `Soaking rollout ${e.rolloutId} has no soakDueAt from the control plane; soak due at ${dueAt}: the default soak of ${DEFAULT_SOAK_SECS} s from ${from}`,
  };
}

/** Runs a step for an input addressed to one rollout, enforcing the `from` state. */
function step(state: ReducerState, input: RolloutInput, from: RolloutState, run: (entry: RolloutEntry) => Step): TransitionResult {
  const entry = lookup(state, input.rolloutId);
  if (entry === undefined) return reject(state, `${input.type} for unknown rollout ${input.rolloutId}`);
  if (entry.state !== from) return reject(state, illegal(input.type, input.rolloutId, entry.state));
  return commit(state, run(entry));
}

function commit(state: ReducerState, s: Step): TransitionResult {
  if ('rejected' in s) return reject(state, s.rejected);
  const done = number(s);
  const notice = s.notice !== undefined ? { notice: s.notice } : {};
  // A result that repeats the probe's status changes nothing: same state object back.
  if (done.entry === lookup(state, done.entry.rolloutId)) return { state, effects: done.effects, ...notice };
  return { state: withEntry(state, done.entry), effects: done.effects, ...notice };
}

/** Gives the step's events consecutive seqs after the entry's last one, and advances it. */
function number(s: Done): { entry: RolloutEntry; effects: Effect[] } {
  const last = s.entry.lastEventSeq;
  const entry: RolloutEntry = s.events.length === 0 ? s.entry : { ...s.entry, lastEventSeq: last + s.events.length };
  const meta = metaOf(entry);
  const emitted: Effect[] = s.events.map((e, i) => ({
    type: 'EmitEvent',
    rolloutId: entry.rolloutId,
    event: withSeq(e, last + i + 1),
    meta,
  }));
  return { entry, effects: [...emitted, ...(s.after ?? [])] };
}

function withSeq(e: UnnumberedEvent, seq: number): AgentEvent {
  return { ...e, seq };
}

export function metaOf(e: RolloutEntry): LogMeta {
  return {
    channel: e.channel,
    targetClosure: e.targetClosure,
    dispatchedAt: e.dispatchedAt,
    ...(e.soakDueAt !== undefined ? { soakDueAt: e.soakDueAt } : {}),
    ...(e.currentClosureAtDispatch !== undefined ? { currentClosureAtDispatch: e.currentClosureAtDispatch } : {}),
    ...(e.policyApplied !== undefined ? { policyApplied: e.policyApplied } : {}),
  };
}

/** `stable@a1b2c3d4` → `stable` (PROTOCOL §4). */
export function channelOf(rolloutId: string): string {
  const at = rolloutId.indexOf('@');
  return at > 0 ? rolloutId.slice(0, at) : rolloutId;
}

function lookup(state: ReducerState, rolloutId: string): RolloutEntry | undefined {
  return Object.hasOwn(state.rollouts, rolloutId) ? state.rollouts[rolloutId] : undefined;
}

function withEntry(state: ReducerState, entry: RolloutEntry): ReducerState {
  return { rollouts: { ...state.rollouts, [entry.rolloutId]: entry } };
}

function sinceMs(iso: string | undefined, now: Date): number | undefined {
  return iso === undefined ? undefined : now.getTime() - Date.parse(iso);
}

function illegal(input: string, rolloutId: string, from: RolloutState): string {
  return `${input} for ${rolloutId} is illegal in state ${from}`;
}

function reject(state: ReducerState, reason: string): TransitionResult {
  return { state, effects: [], rejected: reason };
}
