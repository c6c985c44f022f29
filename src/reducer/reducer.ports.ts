import type { Effect } from './reducer.types';

/**
 * Effects leave the reducer through these ports; other modules provide them
 * (the event log, the activation backends, the probe runners). A port that no
 * module provides yet is replaced by one that only logs and counts.
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

/** Rollout policy the transition function applies; from config until signed manifests carry it. */
export const REDUCER_POLICY = Symbol('REDUCER_POLICY');
