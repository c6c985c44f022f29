import { Inject, Injectable, type OnApplicationShutdown } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { JobRuntime } from '../jobs/job-runtime.service';
import { type JobHandle, ok } from '../jobs/job.types';
import { TIMEOUTS } from '../protocol/protocol.constants';
import { DELIVERY_CONNECTIONS, TLS_IDENTITY } from './comms.constants';
import type { TlsIdentity } from './identity';
import { buildTlsAgent, type ConnectTimeoutAgent } from './tls-agent';

/** How often a retired agent is checked for idleness. */
const RETIRE_CHECK_MS = 1_000;
export const TLS_RETIRE_NAME = 'tls-agent-retire';
/**
 * A retired agent is destroyed at the latest after this: longer than the
 * longest call deadline (the dispatch long-poll, 60 s + 10 s), so a call that
 * is still running then has already failed on its own deadline.
 */
export const RETIRE_GRACE_MS = 90_000;

/** The two connection pools of one identity. */
interface Pools {
  control: ConnectTimeoutAgent;
  delivery: ConnectTimeoutAgent;
}

interface Retired {
  pools: Pools;
  retiredMono: number;
  idleChecks: number;
}

/**
 * The https.Agents in use, two pools of one identity: `current()` for the
 * heartbeat, the dispatch poll and manifest fetches; `delivery()` for event
 * POSTs. A replay keeps every delivery connection busy, and a heartbeat
 * must never wait in a pool for one of them to come free.
 * Callers ask per request so a renewed identity applies to new connections.
 * Retired agents are checked by a job of the runtime, switched on only
 * while there are some.
 */
@Injectable()
export class TlsAgentHolder implements OnApplicationShutdown {
  private pools: Pools;
  private identity: TlsIdentity;
  private readonly retired = new Set<Retired>();
  private readonly job: JobHandle;

  constructor(
    @Inject(TLS_IDENTITY) identity: TlsIdentity,
    @Inject(CLOCK) private readonly clock: Clock,
    runtime: JobRuntime,
  ) {
    this.identity = identity;
    this.pools = buildPools(identity);
    this.job = runtime.register({
      name: TLS_RETIRE_NAME,
      afterBoot: false,
      enabled: false,
      schedule: { kind: 'every', intervalMs: RETIRE_CHECK_MS },
      backoff: { firstMs: RETIRE_CHECK_MS, capMs: RETIRE_CHECK_MS },
      run: () => {
        this.checkRetired();
        return ok();
      },
    });
  }

  current(): ConnectTimeoutAgent {
    return this.pools.control;
  }

  /** Event delivery's own pool, at most DELIVERY_CONNECTIONS connections. */
  delivery(): ConnectTimeoutAgent {
    return this.pools.delivery;
  }

  currentIdentity(): TlsIdentity {
    return this.identity;
  }

  /**
   * New requests get a new agent with `identity`. A new agent rather than new
   * options on the old one: its keep-alive sockets and TLS session cache
   * belong to the old certificate, and a reused socket or resumed session
   * would go on presenting it. Calls already on the old agent finish there.
   */
  replace(identity: TlsIdentity): void {
    const old = this.pools;
    this.pools = buildPools(identity);
    this.identity = identity;
    this.retire(old);
  }

  /** Old identities whose agents still wait for their in-flight calls to finish. */
  retiringCount(): number {
    return this.retired.size;
  }

  // The last shutdown phase: an in-flight heartbeat is let finish before its sockets go.
  onApplicationShutdown(): void {
    for (const r of this.retired) destroyPools(r.pools);
    this.retired.clear();
    destroyPools(this.pools);
  }

  /**
   * One check of the retired agents (the job's run; public so tests can
   * drive it): each goes once it has no request in flight or queued (its
   * idle keep-alive sockets go with it), or after the grace period. Idle
   * must hold on two checks in a row: a caller that took the agent from
   * current() just before the swap may not have handed it its request yet.
   */
  checkRetired(): void {
    const now = this.clock.monotonicMs();
    for (const entry of this.retired) {
      entry.idleChecks = isIdle(entry.pools.control) && isIdle(entry.pools.delivery) ? entry.idleChecks + 1 : 0;
      if (entry.idleChecks >= 2 || now - entry.retiredMono >= RETIRE_GRACE_MS) {
        this.retired.delete(entry);
        destroyPools(entry.pools);
      }
    }
    if (this.retired.size === 0) this.job.disable();
  }

  private retire(pools: Pools): void {
    this.retired.add({ pools, retiredMono: this.clock.monotonicMs(), idleChecks: 0 });
    this.job.enable();
  }
}

function buildPools(identity: TlsIdentity): Pools {
  return {
    control: buildTlsAgent(identity, TIMEOUTS.connectMs),
    delivery: buildTlsAgent(identity, TIMEOUTS.connectMs, DELIVERY_CONNECTIONS),
  };
}

function destroyPools(pools: Pools): void {
  pools.control.destroy();
  pools.delivery.destroy();
}

function isIdle(agent: ConnectTimeoutAgent): boolean {
  const busy = (pool: NodeJS.ReadOnlyDict<unknown[]>): boolean => Object.values(pool).some((list) => (list?.length ?? 0) > 0);
  return !busy(agent.sockets) && !busy(agent.requests);
}
