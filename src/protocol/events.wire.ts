// class-transformer reads design-time metadata, also outside Nest (the dev CP, scripts).
import 'reflect-metadata';
import { Type } from 'class-transformer';
import { IsDefined, IsIn, IsInt, IsObject, IsOptional, IsString, Matches, Min, ValidateNested } from '../common/class-validator';
import { type FailurePolicy, type ProbeMode, ROLLOUT_ID_PATTERN } from './rollout';

/** PROTOCOL §6 event bodies: `kind` (PascalCase) plus camelCase fields, always with `seq`. */
export type AgentEvent =
  | { kind: 'DispatchAck'; seq: number; currentClosureAtDispatch: string | null; receivedAt: string }
  | { kind: 'ActivationStarted'; seq: number; startedAt: string; switchMethod: string }
  | {
      kind: 'ActivationCompleted';
      seq: number;
      observedCurrentClosure: string | null;
      exitCode: number;
      completedAt: string;
    }
  | { kind: 'ActivationFailed'; seq: number; exitCode: number | null; stderrTail: string; failedAt: string }
  | { kind: 'ActivationDeferred'; seq: number; component: string; deferredAt: string }
  | {
      kind: 'ProbeTopologyDeclared';
      seq: number;
      probes: { probeName: string; kind: string; mode: ProbeMode }[];
      declaredAt: string;
    }
  | { kind: 'ProbeObservedFirst'; seq: number; probeName: string; mode: ProbeMode; observedAt: string }
  | {
      kind: 'ProbeResult';
      seq: number;
      probeName: string;
      mode: ProbeMode;
      status: 'pass' | 'fail';
      observedAt: string;
      failureReason?: string;
      subResults?: unknown[];
    }
  | { kind: 'ProbeFailureFirst'; seq: number; probeName: string; mode: ProbeMode; firstFailedAt: string }
  | {
      kind: 'Failed';
      seq: number;
      failedAt: string;
      sustainedDurationSecs: number;
      failingProbes: string[];
      policyApplied: FailurePolicy;
    }
  | { kind: 'RollbackComplete'; seq: number; revertedToClosure: string; exitCode: number; completedAt: string }
  | { kind: 'Converged'; seq: number; convergedAt: string; currentClosure: string };

export type AgentEventKind = AgentEvent['kind'];

/** An event before the reducer numbers it. */
export type UnnumberedEvent = AgentEvent extends infer E ? (E extends AgentEvent ? Omit<E, 'seq'> : never) : never;

export const EVENT_KINDS: readonly AgentEventKind[] = [
  'DispatchAck',
  'ActivationStarted',
  'ActivationCompleted',
  'ActivationFailed',
  'ActivationDeferred',
  'ProbeTopologyDeclared',
  'ProbeObservedFirst',
  'ProbeResult',
  'ProbeFailureFirst',
  'Failed',
  'RollbackComplete',
  'Converged',
];

/** PROTOCOL §6 envelope, camelCase. */
export interface EventEnvelope {
  hostname: string;
  rolloutId: string;
  event: AgentEvent;
  signature?: string;
}

/**
 * The part of an event every receiver relies on: its kind and its seq. The CP
 * keys its dedup on (hostname, rolloutId, seq), so these are what must hold.
 */
export class EventHead {
  @IsIn(EVENT_KINDS)
  kind!: AgentEventKind;

  @IsInt()
  @Min(1)
  seq!: number;
}

export class EventEnvelopeBody {
  @IsString()
  hostname!: string;

  @IsString()
  @Matches(ROLLOUT_ID_PATTERN, { message: 'rolloutId must look like <channel>@<channelRef>' })
  rolloutId!: string;

  @IsDefined()
  @IsObject()
  @ValidateNested()
  @Type(() => EventHead)
  event!: EventHead;

  @IsOptional()
  @IsString()
  signature?: string;
}
