import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { MetricsService } from '../metrics/metrics.service';
import { EffectPortRegistry } from './effect-ports';
import { REDUCER_QUEUE_CAPACITY } from './reducer.constants';
import { type EffectOf, REDUCER_POLICY, type ReducerInputPort } from './reducer.ports';
import { EMPTY_STATE, type Effect, type Policy, type ReducerInput, type ReducerState, type TransitionResult } from './reducer.types';
import { type RolloutChange, rolloutChanges } from './state-changes';
import { transition } from './transition';

interface Queued {
  input: ReducerInput;
  resolve: (result: TransitionResult) => void;
  reject: (err: Error) => void;
}

export class ReducerClosedError extends Error {
  constructor() {
    super('the reducer is shut down and takes no more input');
    this.name = 'ReducerClosedError';
  }
}

/**
 * An input whose events could not be made durable (the event log refused the
 * append): nothing changed, and the same input may be submitted again.
 */
export class EventsNotDurableError extends Error {
  override readonly name = 'EventsNotDurableError';
}

export interface ReducerStats {
  queueDepth: number;
  waitingProducers: number;
  applied: number;
  rejected: number;
  failed: number;
  /** Effects that reached a port no module serves yet. */
  unconnectedEffects: Record<Effect['type'], number>;
  /** Monotonic ms of the last input taken off the queue; liveness reads it. */
  lastProgressMono: number | null;
}

/**
 * The one mutator of rollout state: a bounded queue and a single consumer
 * that applies the pure transition function and sends the effects out
 * through ports.
 */
@Injectable()
export class ReducerService implements ReducerInputPort, OnApplicationShutdown {
  private readonly logger = new Logger(ReducerService.name);
  private state: ReducerState = EMPTY_STATE;
  private readonly queue: Queued[] = [];
  private readonly spaceWaiters: (() => void)[] = [];
  private consuming: Promise<void> | null = null;
  private closed = false;
  private readonly watchers: ((state: ReducerState) => void)[] = [];
  private readonly stats: ReducerStats = {
    queueDepth: 0,
    waitingProducers: 0,
    applied: 0,
    rejected: 0,
    failed: 0,
    unconnectedEffects: { EmitEvent: 0, FireSwitch: 0, FireRollback: 0, ResetProbeCache: 0 },
    lastProgressMono: null,
  };

  constructor(
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(REDUCER_POLICY) private readonly policy: Policy,
    private readonly ports: EffectPortRegistry,
    private readonly metrics: MetricsService,
  ) {}

  /** Queues an input; waits while the queue is full. Resolves once the input is applied (or rejected). */
  async submit(input: ReducerInput): Promise<TransitionResult> {
    while (!this.closed && this.queue.length >= REDUCER_QUEUE_CAPACITY) {
      await new Promise<void>((resolve) => this.spaceWaiters.push(resolve));
    }
    if (this.closed) throw new ReducerClosedError();
    return new Promise<TransitionResult>((resolve, reject) => {
      this.queue.push({ input, resolve, reject });
      this.pump();
    });
  }

  /** The current state; immutable, so callers may keep it. */
  current(): ReducerState {
    return this.state;
  }

  /** Sets the state rebuilt from the event log, before any input arrives. */
  restore(state: ReducerState): void {
    if (this.stats.applied + this.stats.rejected + this.stats.failed > 0 || this.queue.length > 0) {
      throw new Error('restore() must run before the reducer takes input');
    }
    this.commit(state);
  }

  /**
   * Calls `watcher` with the current state now and with every state committed
   * after it, synchronously: for what paces itself by what the rollouts are
   * doing (the advance tick runs only while one is Soaking).
   */
  watch(watcher: (state: ReducerState) => void): void {
    this.watchers.push(watcher);
    watcher(this.state);
  }

  lastEventSeqByRollout(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [id, entry] of Object.entries(this.state.rollouts)) out[id] = entry.lastEventSeq;
    return out;
  }

  statistics(): ReducerStats {
    return {
      ...this.stats,
      queueDepth: this.queue.length,
      waitingProducers: this.spaceWaiters.length,
      unconnectedEffects: { ...this.stats.unconnectedEffects },
    };
  }

  /** Resolves when every queued input has been applied. */
  async drain(): Promise<void> {
    while (this.consuming) await this.consuming;
  }

  async onApplicationShutdown(): Promise<void> {
    this.closed = true;
    for (const wake of this.spaceWaiters.splice(0)) wake();
    await this.drain();
  }

  private pump(): void {
    if (this.consuming) return;
    this.consuming = this.consume().finally(() => {
      this.consuming = null;
      // An input queued after the loop found the queue empty, but before this
      // ran, saw `consuming` still set and did not pump: it would be stranded.
      if (this.queue.length > 0) this.pump();
    });
  }

  private async consume(): Promise<void> {
    for (let item = this.queue.shift(); item; item = this.queue.shift()) {
      this.spaceWaiters.shift()?.();
      this.stats.lastProgressMono = this.clock.monotonicMs();
      try {
        item.resolve(await this.apply(item.input));
      } catch (err) {
        this.stats.failed += 1;
        item.reject(err as Error);
      }
    }
  }

  private async apply(input: ReducerInput): Promise<TransitionResult> {
    const result = transition(this.state, input, this.clock.now(), this.policy);
    if (result.rejected) {
      this.stats.rejected += 1;
      this.logger.warn(`${result.rejected}; input ignored, rollout state unchanged`, inputFields(input));
      return result;
    }
    if (result.note) this.logger.debug(result.note);

    const events = result.effects.filter((e): e is EffectOf<'EmitEvent'> => e.type === 'EmitEvent');
    if (events.length > 0) {
      const emitPort = this.ports.port('EmitEvent');
      if (emitPort) {
        try {
          await emitPort.emit(events);
        } catch (err) {
          const why = `${describeInput(input)} not applied: its events could not be made durable (${(err as Error).message})`;
          this.logger.error(`${why}; rollout state unchanged, nothing sent to the control plane`, inputFields(input));
          throw new EventsNotDurableError(why, { cause: err });
        }
      } else {
        this.unconnected('EmitEvent', events.length, events.map((e) => `${e.event.kind}#${e.event.seq}`).join(', '));
      }
    }
    const before = this.state;
    this.commit(result.state);
    this.stats.applied += 1;
    if (result.notice) this.logger.log(result.notice);
    this.report(rolloutChanges(before, result.state, result.effects));

    for (const effect of result.effects) {
      try {
        await this.dispatch(effect);
      } catch (err) {
        this.logger.error(
          `${effect.type} for ${effect.rolloutId} failed: ${(err as Error).message}; the rollout's state stands as applied`,
          { rolloutId: effect.rolloutId, effect: effect.type },
        );
      }
    }
    return result;
  }

  private commit(state: ReducerState): void {
    if (state === this.state) return;
    this.state = state;
    for (const watcher of this.watchers) watcher(state);
  }

  private async dispatch(effect: Effect): Promise<void> {
    switch (effect.type) {
      case 'EmitEvent':
        return; // already made durable before the state was committed
      case 'FireSwitch': {
        const port = this.ports.port('FireSwitch');
        if (port) return port.handle(effect);
        return this.unconnected(effect.type, 1, `${effect.rolloutId} → ${effect.targetClosure}`);
      }
      case 'FireRollback': {
        const port = this.ports.port('FireRollback');
        if (port) return port.handle(effect);
        return this.unconnected(effect.type, 1, `${effect.rolloutId} → ${effect.toClosure}`);
      }
      case 'ResetProbeCache': {
        const port = this.ports.port('ResetProbeCache');
        if (port) return port.handle(effect);
        return this.unconnected(effect.type, 1, effect.rolloutId);
      }
      default: {
        const never: never = effect;
        return never;
      }
    }
  }

  /** Each state change of a rollout is one info line; a failed rollback is an error. */
  private report(changes: readonly RolloutChange[]): void {
    for (const change of changes) {
      switch (change.kind) {
        case 'state':
          this.logger.log(change.line, change.fields);
          break;
        case 'failed':
          // Its line went out with the state change.
          this.metrics.recordRolloutFailed(change.policy);
          break;
        case 'rollback':
          this.metrics.recordRollback(change.reverted ? 'reverted' : 'failed');
          if (change.reverted) this.logger.log(change.line, change.fields);
          else this.logger.error(change.line, change.fields);
          break;
        default: {
          const never: never = change;
          return never;
        }
      }
    }
  }

  private unconnected(type: Effect['type'], count: number, what: string): void {
    this.stats.unconnectedEffects[type] += count;
    this.logger.debug(`${type} (${what}): no consumer is connected to this port; counted only`);
  }
}

/** The log fields of an input: what it was and which rollout it was for (a tick is for none). */
export function inputFields(input: ReducerInput): { input: ReducerInput['type']; rolloutId?: string } {
  if (input.type === 'Tick') return { input: input.type };
  if (input.type === 'Snapshot') return { input: input.type, rolloutId: input.snapshot.rolloutId };
  return { input: input.type, rolloutId: input.rolloutId };
}

export function describeInput(input: ReducerInput): string {
  return input.type === 'Tick'
    ? 'tick'
    : input.type === 'Snapshot'
      ? `snapshot of ${input.snapshot.rolloutId}`
      : `${input.type} for ${input.rolloutId}`;
}
