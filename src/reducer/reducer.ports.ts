import type { Effect, ReducerInput, ReducerState, TransitionResult } from './reducer.types';

/**
 * How the modules that feed the reducer reach it: its one input queue, and
 * the state it holds. ReducerModule provides it (REDUCER_INPUT).
 */
export interface ReducerInputPort {
  /** Queues an input; waits while the queue is full. Resolves once it is applied (or rejected). */
  submit(input: ReducerInput): Promise<TransitionResult>;
  /** The current state; immutable. */
  current(): ReducerState;
}

export const REDUCER_INPUT = Symbol('REDUCER_INPUT');

/**
 * Effects leave the reducer through these ports; other modules serve them
 * (the event log, the activation backends, the probe runners) by binding
 * into EffectPortRegistry (effect-ports.ts). A port that no module serves
 * yet only logs and counts.
 */
export type EffectOf<T extends Effect['type']> = Extract<Effect, { type: T }>;

export interface EffectPort<T extends Effect['type']> {
  /** Must return quickly: long work (a switch) is started here, not awaited. */
  handle(effect: EffectOf<T>): Promise<void> | void;
}

/**
 * Takes all events of one transition at once: all of them are durable when
 * it resolves, none when it rejects. The reducer commits the transition only
 * after it resolves, so a failed append can never leave a seq half-used.
 */
export interface EmitEventPort {
  emit(effects: readonly EffectOf<'EmitEvent'>[]): Promise<void>;
}

export const EMIT_EVENT_PORT = Symbol('EMIT_EVENT_PORT');
export const FIRE_SWITCH_PORT = Symbol('FIRE_SWITCH_PORT');
export const FIRE_ROLLBACK_PORT = Symbol('FIRE_ROLLBACK_PORT');
export const RESET_PROBE_CACHE_PORT = Symbol('RESET_PROBE_CACHE_PORT');

export type FireSwitchPort = EffectPort<'FireSwitch'>;
export type FireRollbackPort = EffectPort<'FireRollback'>;
export type ResetProbeCachePort = EffectPort<'ResetProbeCache'>;

/** The port each effect type leaves through. */
export interface EffectPorts {
  EmitEvent: EmitEventPort;
  FireSwitch: FireSwitchPort;
  FireRollback: FireRollbackPort;
  ResetProbeCache: ResetProbeCachePort;
}

/** The token a serving module's port is also provided under, e.g. for a test to reach it. */
export const EFFECT_PORT_TOKENS: { readonly [K in keyof EffectPorts]: symbol } = {
  EmitEvent: EMIT_EVENT_PORT,
  FireSwitch: FIRE_SWITCH_PORT,
  FireRollback: FIRE_ROLLBACK_PORT,
  ResetProbeCache: RESET_PROBE_CACHE_PORT,
};

/** Rollout policy the transition function applies; from config until signed manifests carry it. */
export const REDUCER_POLICY = Symbol('REDUCER_POLICY');
