import { Type } from 'class-transformer';
import {
  IsArray,
  IsBoolean,
  IsIn,
  IsInt,
  IsNumber,
  IsObject,
  IsString,
  Matches,
  Min,
  ValidateIf,
  ValidateNested,
} from '../common/class-validator';
import type { ActivationSectionStatus, ActivationStatusPart } from '../activation/activation.status';
import type {
  ActivationKind,
  ActivationOutcome,
  ActivationPhase,
  ActivationPreflightStatus,
  ActivationStatus,
  RealiseProgress,
} from '../activation/activation.types';
import type { CommsStatusPart } from '../comms/comms.status';
import type { CpFailureKind } from '../comms/cp-failure';
import type { CertificateStatus, CertificateValidity } from '../comms/identity-watcher';
import type { DispatchStatusPart } from '../dispatch/dispatch.status';
import type { DispatchStatus, HeldOrder, LastOrder } from '../dispatch/dispatch.worker';
import type { ComponentHealth, ComponentName, ComponentState } from '../health/component-health';
import type { HealthStatusPart } from '../health/health.status';
import type { HeartbeatStatusPart } from '../heartbeat/heartbeat.status';
import type { HeartbeatOutcome, HeartbeatStatus } from '../heartbeat/heartbeat.service';
import type { ReplayStatus } from '../outbound/drainer.service';
import type { EventLogWriteHealth } from '../outbound/event-log.service';
import type { OutboundStatus, OutboundStatusPart, RolloutStatus } from '../outbound/outbound.status';
import type { ProbesStatusPart } from '../probes/probes.status';
import type { HealthChecksFileStatus, ProbeRunView, ProbesStatus } from '../probes/probes.status.types';
import { FAILURE_POLICIES, type FailurePolicy, PROBE_MODES, type ProbeMode, ROLLOUT_STATES, type RolloutState } from '../protocol/rollout';
import { validateWire } from '../protocol/validate';
import type { ExchangeKind, ReplayFromRecord } from '../recovery/heartbeat-exchange';
import type { RecoveryStatus } from '../recovery/recovery.service';
import type { RecoveryStatusPart } from '../recovery/recovery.status';
import type { ReducerStats } from '../reducer/reducer.service';
import type { ReducerStatusPart } from '../reducer/reducer.status';
import type { Effect, ProbeStatus, ReducerInputType, RollbackAttempt } from '../reducer/reducer.types';
import type { ProbeJudgement, RolloutHealth } from '../reducer/rollout-health';
import type { RolloutTransition } from '../reducer/rollout-history';
import type { JobResultStatus, JobState, JobStatus } from '../jobs/job.types';
import type { JobsStatusPart } from '../jobs/jobs.status';
import type { KeyAlgorithm } from '../trust/keys';
import type { KeySlot } from '../trust/manifest';
import { REFUSAL_REASONS, type RefusalReason } from '../trust/refusal';
import type { LastTrustFailure, LastVerified, TrustStatus, VerifiedFrom } from '../trust/trust.service';
import type { TrustStatusPart } from '../trust/trust.status';
import type { AgentStatusPart } from './agent.status';

/*
 * `GET /status`, typed once. `nixfleet-agent status`, the systemd STATUS=
 * line's readers and other programs read this document: a key is never
 * removed or renamed, and never changes meaning. A value not known is null,
 * never a missing key. Each module contributes its own keys
 * (StatusContributor); every section class here `implements` the type its
 * module returns, so the compiler holds the two together, and
 * test/status.e2e-spec.ts checks the live document against these classes
 * (exact: no key this file does not declare).
 *
 * `lastError` is not one shape. It is an object in `heartbeat`
 * ({ kind, message, at }) and `eventLog` ({ message, cause, code, at }), and
 * a string in `dispatch` (and in `/readyz`); readers already handle both, so
 * neither shape changes. `reducer.lastProgressMono` is a monotonic-clock
 * reading in ms, comparable only with others from the same process.
 */

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/** Every member of a string union: the Record makes the compiler reject a list that misses one. */
function members<T extends string>(all: Record<T, true>): T[] {
  return Object.keys(all) as T[];
}

function all(...decorators: PropertyDecorator[]): PropertyDecorator {
  return (target, key) => {
    for (const decorate of decorators) decorate(target, key);
  };
}

/** The key is present; null is a value (not known), anything else is checked by the other decorators. */
const Nullable = (): PropertyDecorator => ValidateIf((_: object, value: unknown) => value !== null);
const Time = (): PropertyDecorator => all(IsString(), Matches(RFC3339, { message: '$property must be an RFC 3339 time' }));
const Count = (): PropertyDecorator => all(IsInt(), Min(0));
const Section = (cls: () => new () => object): PropertyDecorator => all(IsObject(), ValidateNested(), Type(cls));

const CP_FAILURE_KINDS = members<CpFailureKind>({
  connect: true,
  tls: true,
  timeout: true,
  network: true,
  'http-status': true,
  'bad-body': true,
  aborted: true,
});
const COMPONENT_STATES = members<ComponentState>({ ok: true, warning: true, failing: true });
const EXCHANGE_KINDS = members<ExchangeKind>({ 'boot-recovery': true, heartbeat: true });
const HEARTBEAT_RESULTS: HeartbeatOutcome['result'][] = ['ok', ...CP_FAILURE_KINDS];
const REDUCER_INPUT_TYPES = members<ReducerInputType>({
  Activate: true,
  ActivationStarted: true,
  ActivationCompleted: true,
  ActivationDeferred: true,
  ActivationFailed: true,
  ProbeTopologyDeclared: true,
  ProbeResult: true,
  RollbackCompleted: true,
  Tick: true,
  Snapshot: true,
});
const ACTIVATION_KINDS = members<ActivationKind>({ switch: true, rollback: true });
const ACTIVATION_PHASES = members<ActivationPhase>({
  realising: true,
  'waiting for the switch lock': true,
  'setting profile': true,
  switching: true,
});
const ACTIVATION_OUTCOMES = members<ActivationOutcome['kind']>({ completed: true, failed: true, deferred: true });
const CERTIFICATE_VALIDITIES = members<CertificateValidity>({ valid: true, expiring: true, expired: true, 'not-yet-valid': true });
const POLL_OUTCOMES = members<NonNullable<DispatchStatus['lastOutcome']>>({ order: true, 'no-order': true, failed: true });
const ORDER_OUTCOMES = members<LastOrder['outcome']>({
  submitting: true,
  accepted: true,
  rejected: true,
  refused: true,
  'not-applied': true,
});
const TRUST_MODES = members<TrustStatus['mode']>({ verify: true, unsigned: true });
const KEY_ALGORITHMS_SHOWN = members<KeyAlgorithm>({ ed25519: true, 'ecdsa-p256': true });
const KEY_SLOTS = members<KeySlot>({ current: true, previous: true });
const VERIFIED_FROM = members<VerifiedFrom>({ 'control-plane': true, cache: true });
const TRUST_PHASES = members<LastTrustFailure['during']>({ dispatch: true, resume: true });
const JOB_STATES = members<JobState>({ waiting: true, scheduled: true, running: true, disabled: true, stopped: true });
const JOB_RESULT_KINDS = members<JobResultStatus['kind']>({ ok: true, failed: true, 'retry-after': true });
const PROBE_RESULTS = members<ProbeStatus>({ pass: true, fail: true });
const FILE_STATES = members<HealthChecksFileStatus['state']>({ 'not-read': true, missing: true, loaded: true, invalid: true });
const CLEARED_BY = members<NonNullable<EventLogWriteHealth['clearedBy']>>({ probe: true, append: true });

export class ComponentSection implements ComponentHealth {
  @IsIn(COMPONENT_STATES) state!: ComponentState;
  @IsString() detail!: string;
  @Nullable() @Time() since!: string | null;
}

export class ComponentsSection implements Record<ComponentName, ComponentHealth> {
  @Section(() => ComponentSection) eventLog!: ComponentSection;
  @Section(() => ComponentSection) delivery!: ComponentSection;
  @Section(() => ComponentSection) dispatchPoll!: ComponentSection;
  @Section(() => ComponentSection) activationBackend!: ComponentSection;
  @Section(() => ComponentSection) identity!: ComponentSection;
  @Section(() => ComponentSection) heartbeat!: ComponentSection;
}

/** `heartbeat.lastError`: an object. */
export class HeartbeatError implements NonNullable<HeartbeatStatus['lastError']> {
  @IsIn(CP_FAILURE_KINDS) kind!: CpFailureKind;
  @IsString() message!: string;
  @Time() at!: string;
}

export class ReplayFromSection implements ReplayFromRecord {
  @IsString() value!: string;
  @Time() receivedAt!: string;
  @IsIn(EXCHANGE_KINDS) source!: ExchangeKind;
}

export class HeartbeatOutcomeSection implements HeartbeatOutcome {
  @Time() at!: string;
  @IsIn(EXCHANGE_KINDS) source!: ExchangeKind;
  @IsIn(HEARTBEAT_RESULTS) result!: HeartbeatOutcome['result'];
  @Nullable() @IsInt() httpStatus!: number | null;
  @Nullable() @Count() latencyMs!: number | null;
  @Nullable() @IsString() error!: string | null;
}

export class HeartbeatSection implements HeartbeatStatus {
  @IsNumber() intervalSecs!: number;
  @Nullable() @Time() lastAttemptAt!: string | null;
  @Nullable() @Time() lastSuccessAt!: string | null;
  @Nullable() @Section(() => HeartbeatError) lastError!: HeartbeatError | null;
  @Count() consecutiveFailures!: number;
  @Nullable() @Time() failingSince!: string | null;
  @Nullable() @Time() nextDueAt!: string | null;
  @Nullable() @Section(() => ReplayFromSection) lastReplayFrom!: ReplayFromSection | null;
  @Nullable() @IsNumber() clockSkewSecs!: number | null;
  @IsBoolean() inFlight!: boolean;
  @Count() skippedTicks!: number;
  @IsArray() @ValidateNested({ each: true }) @Type(() => HeartbeatOutcomeSection) recentOutcomes!: HeartbeatOutcomeSection[];
}

export class RecoverySection implements RecoveryStatus {
  @Nullable() @Time() completedAt!: string | null;
  @Nullable() @IsBoolean() reachedControlPlane!: boolean | null;
  @Count() snapshotsApplied!: number;
}

export class TransitionSection implements RolloutTransition {
  @Nullable() @IsIn(ROLLOUT_STATES) from!: RolloutState | null;
  @IsIn(ROLLOUT_STATES) to!: RolloutState;
  @Time() at!: string;
  @IsIn(REDUCER_INPUT_TYPES) input!: ReducerInputType;
}

export class RolloutSection implements RolloutStatus {
  @IsString() rolloutId!: string;
  @IsString() channel!: string;
  @IsIn(ROLLOUT_STATES) state!: RolloutState;
  @Nullable() @IsString() targetClosure!: string | null;
  @Count() lastEventSeq!: number;
  @Nullable() @Count() lastDeliveredSeq!: number | null;
  @Nullable() @Time() since!: string | null;
  @Nullable() @Time() soakDueAt!: string | null;
  @Nullable() @IsString() closureBefore!: string | null;
  @Nullable() @IsString() closureAfter!: string | null;
  @IsArray() @ValidateNested({ each: true }) @Type(() => TransitionSection) transitions!: TransitionSection[];
}

export class ReplaySection implements ReplayStatus {
  @IsBoolean() running!: boolean;
  @Nullable() @IsString() rolloutId!: string | null;
  @Nullable() @Count() fromSeq!: number | null;
  @Count() resent!: number;
  @IsArray() @IsInt({ each: true }) missing!: number[];
}

export class OutboundSection implements OutboundStatus {
  @Count() pending!: number;
  @Count() delivered!: number;
  @Count() refused!: number;
  @Nullable() @Count() oldestPendingAgeSecs!: number | null;
  @Nullable() @Time() lastDeliveredAt!: string | null;
  @Nullable() @IsString() deliveryPausedReason!: string | null;
  @Section(() => ReplaySection) replay!: ReplaySection;
  @Count() logBytes!: number;
}

/** `eventLog.lastError`: an object, with the errno text as `cause` and its `code`. */
export class EventLogError implements NonNullable<EventLogWriteHealth['lastError']> {
  @IsString() message!: string;
  @IsString() cause!: string;
  @Nullable() @IsString() code!: string | null;
  @Time() at!: string;
}

export class EventLogSection implements EventLogWriteHealth {
  @IsString() path!: string;
  @Nullable() @Time() failingSince!: string | null;
  @Count() failuresInStreak!: number;
  @Count() failuresTotal!: number;
  @Nullable() @Section(() => EventLogError) lastError!: EventLogError | null;
  @Nullable() @IsString() refusingWrites!: string | null;
  @Nullable() @IsIn(CLEARED_BY) clearedBy!: 'probe' | 'append' | null;
}

export class LastOrderSection implements LastOrder {
  @IsString() rolloutId!: string;
  @IsString() targetClosure!: string;
  @Time() receivedAt!: string;
  @IsIn(ORDER_OUTCOMES) outcome!: LastOrder['outcome'];
  @Nullable() @IsString() detail!: string | null;
}

export class HeldOrderSection implements HeldOrder {
  @IsString() rolloutId!: string;
  @IsString() targetClosure!: string;
  @Time() receivedAt!: string;
  @Count() attempts!: number;
  @IsString() lastError!: string;
  @Time() nextTryAt!: string;
}

export class DispatchSection implements DispatchStatus {
  @IsBoolean() polling!: boolean;
  @Nullable() @Time() lastPollAt!: string | null;
  @Nullable() @IsIn(POLL_OUTCOMES) lastOutcome!: DispatchStatus['lastOutcome'];
  @Count() consecutiveFailures!: number;
  @Nullable() @Time() failingSince!: string | null;
  /** `dispatch.lastError`: a string. */
  @Nullable() @IsString() lastError!: string | null;
  @Nullable() @Time() lastErrorAt!: string | null;
  @Nullable() @Time() nextPollAt!: string | null;
  @Nullable() @Section(() => LastOrderSection) lastOrder!: LastOrderSection | null;
  @Nullable() @Section(() => HeldOrderSection) heldOrder!: HeldOrderSection | null;
}

export class RealiseSection implements RealiseProgress {
  @Nullable() @IsString() lastLine!: string | null;
  @Nullable() @Count() pathsToFetch!: number | null;
  @Count() pathsCopied!: number;
  @Nullable() @Count() downloadBytes!: number | null;
}

export class RunningActivation implements NonNullable<ActivationStatus['running']> {
  @IsString() rolloutId!: string;
  @IsString() closure!: string;
  @IsIn(ACTIVATION_KINDS) kind!: ActivationKind;
  @Time() startedAt!: string;
  @Nullable() @IsIn(ACTIVATION_PHASES) phase!: ActivationPhase | null;
  @Nullable() @Section(() => RealiseSection) realise!: RealiseSection | null;
}

export class ActivationResult implements NonNullable<ActivationStatus['lastResult']> {
  @IsString() rolloutId!: string;
  @IsIn(ACTIVATION_KINDS) kind!: ActivationKind;
  @IsIn(ACTIVATION_OUTCOMES) outcome!: ActivationOutcome['kind'];
  @Nullable() @IsInt() exitCode!: number | null;
  @Time() at!: string;
  @IsString() detail!: string;
}

export class PreflightSection implements ActivationPreflightStatus {
  @Nullable() @Time() checkedAt!: string | null;
  @IsArray() @IsString({ each: true }) problems!: string[];
}

export class ActivationSection implements ActivationSectionStatus {
  @IsString() backend!: string;
  @Nullable() @Section(() => RunningActivation) running!: RunningActivation | null;
  @Count() queued!: number;
  @Nullable() @Section(() => ActivationResult) lastResult!: ActivationResult | null;
  @Section(() => PreflightSection) preflight!: PreflightSection;
}

export class HealthChecksFileSection implements HealthChecksFileStatus {
  @IsString() path!: string;
  @IsIn(FILE_STATES) state!: HealthChecksFileStatus['state'];
  @Nullable() @Time() readAt!: string | null;
  @IsArray() @IsString({ each: true }) problems!: string[];
}

export class ProbeRunSection implements ProbeRunView {
  @IsString() name!: string;
  @IsString() kind!: string;
  @IsIn(PROBE_MODES) mode!: ProbeMode;
  @IsNumber() @Min(0) intervalSecs!: number;
  @IsBoolean() runOnce!: boolean;
  @Nullable() @IsString() problem!: string | null;
  @IsBoolean() running!: boolean;
  @Count() runs!: number;
  @Nullable() @Time() lastRunAt!: string | null;
  @Nullable() @Count() lastDurationMs!: number | null;
  @Nullable() @IsIn(PROBE_RESULTS) lastRunResult!: ProbeStatus | null;
  @Nullable() @IsString() lastRunReason!: string | null;
}

export class ProbeJudgementSection implements ProbeJudgement {
  @IsString() name!: string;
  @IsString() kind!: string;
  @IsIn(PROBE_MODES) mode!: ProbeMode;
  @Nullable() @IsIn(PROBE_RESULTS) lastResult!: ProbeStatus | null;
  @Nullable() @Time() since!: string | null;
  @Nullable() @Count() failingForSecs!: number | null;
  @Nullable() @IsString() failureReason!: string | null;
  @IsBoolean() stale!: boolean;
}

export class RollbackSection implements RollbackAttempt {
  @IsString() toClosure!: string;
  @IsInt() exitCode!: number;
  @Time() completedAt!: string;
}

export class RolloutHealthSection implements RolloutHealth {
  @IsString() rolloutId!: string;
  @IsIn(ROLLOUT_STATES) state!: RolloutState;
  @Nullable() @Time() soakDueAt!: string | null;
  @Nullable() @Count() soakRemainingSecs!: number | null;
  @IsBoolean() probesDeclared!: boolean;
  @IsArray() @ValidateNested({ each: true }) @Type(() => ProbeJudgementSection) probes!: ProbeJudgementSection[];
  @IsArray() @IsString({ each: true }) waitingFor!: string[];
  @Nullable() @Time() failedAt!: string | null;
  @Nullable() @IsIn(FAILURE_POLICIES) policyApplied!: FailurePolicy | null;
  @Nullable() @Section(() => RollbackSection) rollback!: RollbackSection | null;
}

export class ProbesSection implements ProbesStatus {
  @Section(() => HealthChecksFileSection) healthChecksFile!: HealthChecksFileSection;
  @Nullable() @IsString() activeRollout!: string | null;
  @IsArray() @ValidateNested({ each: true }) @Type(() => ProbeRunSection) runners!: ProbeRunSection[];
  @IsArray() @ValidateNested({ each: true }) @Type(() => RolloutHealthSection) rollouts!: RolloutHealthSection[];
}

export class CertificateSection implements CertificateStatus {
  @IsString() cn!: string;
  @IsString() machineId!: string;
  @IsString() keyType!: string;
  @Time() notBefore!: string;
  @Time() notAfter!: string;
  @IsIn(CERTIFICATE_VALIDITIES) validity!: CertificateValidity;
  @IsNumber() secondsToExpiry!: number;
  @IsNumber() daysToExpiry!: number;
  @IsString() fingerprint256!: string;
  @Nullable() @Time() lastReloadAt!: string | null;
  @Nullable() @IsString() lastReloadError!: string | null;
}

export class UnconnectedEffects implements Record<Effect['type'], number> {
  @Count() EmitEvent!: number;
  @Count() FireSwitch!: number;
  @Count() FireRollback!: number;
  @Count() ResetProbeCache!: number;
}

export class JobResultSection {
  @IsIn(JOB_RESULT_KINDS) kind!: JobResultStatus['kind'];
  @ValidateIf((r: { kind: string }) => r.kind !== 'ok') @IsString() cause?: string;
  @ValidateIf((r: { kind: string }) => r.kind === 'retry-after') @IsNumber() secs?: number;
}

export class JobSection implements JobStatus {
  @IsString() name!: string;
  @IsIn(JOB_STATES) state!: JobState;
  @Nullable() @Time() lastStartAt!: string | null;
  @Nullable() @Time() lastEndAt!: string | null;
  @Nullable() @Section(() => JobResultSection) lastResult!: JobResultStatus | null;
  @Nullable() @Time() nextDueAt!: string | null;
  @Count() consecutiveFailures!: number;
  @Nullable() @Time() failingSince!: string | null;
  @Count() skippedTicks!: number;
}

export class ReducerSection implements ReducerStats {
  @Count() queueDepth!: number;
  @Count() waitingProducers!: number;
  @Count() applied!: number;
  @Count() rejected!: number;
  @Count() failed!: number;
  @Section(() => UnconnectedEffects) unconnectedEffects!: UnconnectedEffects;
  @Nullable() @IsNumber() lastProgressMono!: number | null;
}

export class TrustKeysSection implements NonNullable<TrustStatus['keys']> {
  @Nullable() @IsIn(KEY_ALGORITHMS_SHOWN) current!: KeyAlgorithm | null;
  @Nullable() @IsIn(KEY_ALGORITHMS_SHOWN) previous!: KeyAlgorithm | null;
  @Nullable() @Time() rejectBefore!: string | null;
}

export class LastVerifiedSection implements LastVerified {
  @IsString() rolloutId!: string;
  @IsString() targetClosure!: string;
  @IsIn(KEY_SLOTS) keySlot!: KeySlot;
  @Time() signedAt!: string;
  @Time() verifiedAt!: string;
  @IsIn(VERIFIED_FROM) from!: VerifiedFrom;
}

export class LastTrustFailureSection implements LastTrustFailure {
  @IsString() rolloutId!: string;
  @IsString() targetClosure!: string;
  @IsIn(REFUSAL_REASONS) reason!: RefusalReason;
  @IsString() detail!: string;
  @Time() at!: string;
  @IsIn(TRUST_PHASES) during!: LastTrustFailure['during'];
}

export class TrustSection implements TrustStatus {
  @IsIn(TRUST_MODES) mode!: TrustStatus['mode'];
  @IsString() trustFile!: string;
  @Nullable() @IsString() warning!: string | null;
  @Nullable() @Section(() => TrustKeysSection) keys!: TrustKeysSection | null;
  @Nullable() @Section(() => LastVerifiedSection) lastVerified!: LastVerifiedSection | null;
  @Nullable() @Section(() => LastTrustFailureSection) lastFailure!: LastTrustFailureSection | null;
  @Count() refusedTotal!: number;
  @Count() unverifiedTotal!: number;
}

/** The whole document. */
export class StatusDocument
  implements
    AgentStatusPart,
    RecoveryStatusPart,
    HealthStatusPart,
    HeartbeatStatusPart,
    OutboundStatusPart,
    DispatchStatusPart,
    ActivationStatusPart,
    ProbesStatusPart,
    TrustStatusPart,
    CommsStatusPart,
    ReducerStatusPart,
    JobsStatusPart
{
  @IsString() machineId!: string;
  @IsString() agentVersion!: string;
  @IsString() controlPlaneUrl!: string;
  @IsInt() pid!: number;
  @Time() startedAt!: string;
  @Count() uptimeSecs!: number;
  /** Read afresh; null when the current-system link is unreadable. */
  @Nullable() @IsString() currentClosure!: string | null;
  @Section(() => ComponentsSection) components!: ComponentsSection;
  @Section(() => HeartbeatSection) heartbeat!: HeartbeatSection;
  @Section(() => RecoverySection) recovery!: RecoverySection;
  @IsArray() @ValidateNested({ each: true }) @Type(() => RolloutSection) rollouts!: RolloutSection[];
  @Section(() => OutboundSection) outbound!: OutboundSection;
  @Section(() => EventLogSection) eventLog!: EventLogSection;
  @Section(() => DispatchSection) dispatch!: DispatchSection;
  @Section(() => ActivationSection) activation!: ActivationSection;
  @Section(() => ProbesSection) probes!: ProbesSection;
  @Section(() => TrustSection) trust!: TrustSection;
  /** null without a client certificate. */
  @Nullable() @Section(() => CertificateSection) certificate!: CertificateSection | null;
  @Section(() => ReducerSection) reducer!: ReducerSection;
  @IsArray() @ValidateNested({ each: true }) @Type(() => JobSection) jobs!: JobSection[];
}

/** What is wrong with a document that claims to be `/status`, one line per problem naming its key path; empty when it conforms. */
export function statusContractProblems(document: unknown): string[] {
  const checked = validateWire(StatusDocument, document, '', { exact: true });
  return checked.ok ? [] : checked.problems;
}
