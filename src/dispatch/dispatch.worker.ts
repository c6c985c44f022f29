import { setTimeout as sleep } from 'node:timers/promises';
import {
  type BeforeApplicationShutdown,
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { jitter, RANDOM, type RandomSource } from '../clock/random';
import { describeFailure } from '../comms/cp-failure';
import { ControlPlaneClient } from '../comms/control-plane.client';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import type { DispatchOrder } from '../protocol/dispatch.wire';
import { CurrentSystemReader } from '../recovery/current-system.reader';
import { RecoveryService } from '../recovery/recovery.service';
import { ReducerService } from '../reducer/reducer.service';
import { submitUntilDurable } from '../reducer/submit-until-durable';

/** PROTOCOL §8: the CP holds a poll up to this long. */
export const DISPATCH_WAIT_SECS = 60;
const BACKOFF_FIRST_MS = 1_000;
const BACKOFF_CAP_MS = 60_000;

/** `/status` `dispatch`: the long-poll's state. */
export interface DispatchStatus {
  polling: boolean;
  /** When the last poll ended, and how: an order, no order within the CP's hold, or a failure. */
  lastPollAt: string | null;
  lastOutcome: 'order' | 'no-order' | 'failed' | null;
  consecutiveFailures: number;
  /** First failed poll of the current streak; null while polls work. */
  failingSince: string | null;
  /** The last failure, kept after polls work again. */
  lastError: string | null;
  lastErrorAt: string | null;
  /** While a failed poll's backoff runs: when the next poll starts. Null while a poll is open, or none failed. */
  nextPollAt: string | null;
  /** The last order for this host, and what became of it. */
  lastOrder: LastOrder | null;
  /**
   * An order taken from the CP whose events cannot be made durable yet (a
   * full disk): kept in memory and submitted again until it is applied; no
   * new poll meanwhile. Null when none is held.
   */
  heldOrder: HeldOrder | null;
}

export interface LastOrder {
  rolloutId: string;
  targetClosure: string;
  receivedAt: string;
  /**
   * `submitting` until the reducer has it (a held order stays so: see
   * heldOrder); `accepted`: the rollout took it (DispatchAck); `rejected`:
   * the reducer refused it (the rollout is past it); `not-applied`: it failed
   * otherwise, or the agent stopped before it could be applied.
   */
  outcome: 'submitting' | 'accepted' | 'rejected' | 'not-applied';
  /** Why it was rejected or not applied; null otherwise. */
  detail: string | null;
}

export interface HeldOrder {
  rolloutId: string;
  targetClosure: string;
  receivedAt: string;
  /** Failed submissions so far. */
  attempts: number;
  lastError: string;
  nextTryAt: string;
}

/**
 * Long-polls the CP for dispatches and turns each valid one into the
 * reducer's `Activate` input. Runs after the boot handshake; errors back off.
 */
@Injectable()
export class DispatchWorker implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(DispatchWorker.name);
  private readonly abort = new AbortController();
  private loop: Promise<void> | null = null;
  private failures = 0;
  private lastError: string | null = null;
  private lastErrorAt: Date | null = null;
  private failingSince: Date | null = null;
  private lastPollAt: Date | null = null;
  private lastOutcome: DispatchStatus['lastOutcome'] = null;
  private lastOrder: LastOrder | null = null;
  private nextPollAt: Date | null = null;
  private heldOrder: HeldOrder | null = null;
  // Durations are read from the monotonic clock: a wall-clock step must not age a failure.
  private failingSinceMono: number | null = null;
  private lastPollMono: number | null = null;

  constructor(
    private readonly client: ControlPlaneClient,
    private readonly reducer: ReducerService,
    private readonly recovery: RecoveryService,
    private readonly currentSystem: CurrentSystemReader,
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    @Inject(RANDOM) private readonly random: RandomSource,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  onApplicationBootstrap(): void {
    this.recovery.whenComplete().then(
      () => {
        if (!this.abort.signal.aborted) this.loop = this.run();
      },
      (err: unknown) => this.logger.error(`dispatch polling not started: ${String(err)}`),
    );
  }

  status(): DispatchStatus {
    return {
      polling: this.loop !== null && !this.abort.signal.aborted,
      lastPollAt: this.lastPollAt?.toISOString() ?? null,
      lastOutcome: this.lastOutcome,
      consecutiveFailures: this.failures,
      failingSince: this.failingSince?.toISOString() ?? null,
      lastError: this.lastError,
      lastErrorAt: this.lastErrorAt?.toISOString() ?? null,
      nextPollAt: this.abort.signal.aborted ? null : (this.nextPollAt?.toISOString() ?? null),
      lastOrder: this.lastOrder && { ...this.lastOrder },
      heldOrder: this.heldOrder && { ...this.heldOrder },
    };
  }

  /** Monotonic ms of the last poll's end and of the current failure streak's start; null when none. */
  progress(): { lastPollMono: number | null; failingSinceMono: number | null } {
    return { lastPollMono: this.lastPollMono, failingSinceMono: this.failingSinceMono };
  }

  async beforeApplicationShutdown(): Promise<void> {
    // A long-poll holds nothing the agent must finish: cut it.
    this.abort.abort();
    await this.loop;
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      this.nextPollAt = null;
      const result = await this.client.pollDispatch(DISPATCH_WAIT_SECS, { signal });
      if (signal.aborted) return;
      this.lastPollAt = this.clock.now();
      this.lastPollMono = this.clock.monotonicMs();
      if (result.ok) {
        this.failures = 0;
        this.failingSince = null;
        this.failingSinceMono = null;
        this.lastOutcome = result.response.body ? 'order' : 'no-order';
        if (result.response.body) await this.accept(result.response.body);
        continue;
      }
      this.failures += 1;
      this.lastOutcome = 'failed';
      this.failingSince ??= this.lastPollAt;
      this.failingSinceMono ??= this.lastPollMono;
      this.lastError = describeFailure(result.failure);
      this.lastErrorAt = this.lastPollAt;
      const retryAfter = result.failure.kind === 'http-status' ? result.failure.retryAfterSecs : null;
      const base = Math.min(BACKOFF_FIRST_MS * 2 ** (this.failures - 1), BACKOFF_CAP_MS);
      const delay = Math.max(jitter(base, 0.2, this.random), (retryAfter ?? 0) * 1000);
      this.nextPollAt = new Date(this.lastPollAt.getTime() + delay);
      this.logger.warn(
        `dispatch poll failed: ${this.lastError}; polling again in ${(delay / 1000).toFixed(1)} s (${this.failures} failure(s) in a row)`,
      );
      try {
        await sleep(delay, undefined, { signal });
      } catch {
        return; // aborted: shutting down
      }
    }
  }

  private async accept(order: DispatchOrder): Promise<void> {
    if (order.hostname !== this.config.machineId) {
      this.logger.warn(
        `dispatch for ${order.rollout_id} names host "${order.hostname}", not "${this.config.machineId}"; ignored`,
      );
      return;
    }
    const lastOrder: LastOrder = {
      rolloutId: order.rollout_id,
      targetClosure: order.target_closure,
      receivedAt: this.clock.now().toISOString(),
      outcome: 'submitting',
      detail: null,
    };
    this.lastOrder = lastOrder;
    this.logger.log(`dispatch received: ${order.rollout_id} → ${order.target_closure} (soak until ${order.soak_due_at})`);
    const receivedAt = lastOrder.receivedAt;
    const settle = (outcome: LastOrder['outcome'], detail: string | null = null): void => {
      lastOrder.outcome = outcome;
      lastOrder.detail = detail;
    };
    let result;
    try {
      // The CP hands an order out once (§8): one lost to a full disk would never come back.
      result = await submitUntilDurable(
        this.reducer,
        {
          type: 'Activate',
          rolloutId: order.rollout_id,
          targetClosure: order.target_closure,
          soakDueAt: order.soak_due_at,
          currentClosure: await this.currentSystem.read(),
          dispatchedAt: order.enqueued_at,
        },
        {
          signal: this.abort.signal,
          random: this.random,
          onHeld: (err, attempts, retryInMs) => {
            this.heldOrder = {
              rolloutId: order.rollout_id,
              targetClosure: order.target_closure,
              receivedAt,
              attempts,
              lastError: err.message,
              nextTryAt: new Date(this.clock.now().getTime() + retryInMs).toISOString(),
            };
            if (attempts === 1) {
              this.logger.error(
                `dispatch for ${order.rollout_id} held: ${err.message}; kept in memory and applied once the event log takes writes (tried again with backoff); no new poll meanwhile`,
              );
            }
          },
        },
      );
    } catch (err) {
      this.heldOrder = null; // not applied, for a reason other than the disk: said here, not below
      settle('not-applied', (err as Error).message);
      // A throw here would end the poll loop for good; the next poll goes on.
      this.logger.error(`dispatch for ${order.rollout_id} not applied: ${(err as Error).message}; polling goes on`);
      return;
    } finally {
      const held = this.heldOrder;
      this.heldOrder = null;
      if (held && this.abort.signal.aborted) {
        settle('not-applied', `the agent stopped first (${held.attempts} attempt(s): ${held.lastError})`);
        this.logger.warn(
          `stopping with the dispatch for ${held.rolloutId} → ${held.targetClosure} never applied (${held.attempts} attempt(s): ${held.lastError}); the control plane must dispatch it again`,
        );
      } else if (held) {
        this.logger.log(`dispatch for ${held.rolloutId} applied after ${held.attempts} failed attempt(s) since ${held.receivedAt}`);
      }
    }
    if (result === null) {
      if (lastOrder.outcome === 'submitting') settle('not-applied', 'the agent stopped first');
      return;
    }
    if (result.rejected) {
      settle('rejected', result.rejected);
      this.logger.warn(`dispatch for ${order.rollout_id} not accepted: ${result.rejected}`);
    } else {
      settle('accepted');
    }
  }
}
