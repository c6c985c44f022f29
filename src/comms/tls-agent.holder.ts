import { Inject, Injectable, type OnApplicationShutdown } from '@nestjs/common';
import { TIMEOUTS } from '../protocol/protocol.constants';
import { TLS_IDENTITY } from './comms.constants';
import type { TlsIdentity } from './identity';
import { buildTlsAgent, type ConnectTimeoutAgent } from './tls-agent';

/** How often a retired agent is checked for idleness. */
const RETIRE_CHECK_MS = 1_000;
/**
 * A retired agent is destroyed at the latest after this: longer than the
 * longest call deadline (the dispatch long-poll, 60 s + 10 s), so a call that
 * is still running then has already failed on its own deadline.
 */
export const RETIRE_GRACE_MS = 90_000;

interface Retired {
  agent: ConnectTimeoutAgent;
  timer: NodeJS.Timeout;
}

/** The https.Agent in use. Callers ask for it per request so a renewed identity applies to new connections. */
@Injectable()
export class TlsAgentHolder implements OnApplicationShutdown {
  private agent: ConnectTimeoutAgent;
  private identity: TlsIdentity;
  private readonly retired = new Set<Retired>();

  constructor(@Inject(TLS_IDENTITY) identity: TlsIdentity) {
    this.identity = identity;
    this.agent = buildTlsAgent(identity, TIMEOUTS.connectMs);
  }

  current(): ConnectTimeoutAgent {
    return this.agent;
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
    const old = this.agent;
    this.agent = buildTlsAgent(identity, TIMEOUTS.connectMs);
    this.identity = identity;
    this.retire(old);
  }

  /** Old agents still waiting for their in-flight calls to finish. */
  retiringCount(): number {
    return this.retired.size;
  }

  // The last shutdown phase: an in-flight heartbeat is let finish before its sockets go.
  onApplicationShutdown(): void {
    for (const r of this.retired) {
      clearInterval(r.timer);
      r.agent.destroy();
    }
    this.retired.clear();
    this.agent.destroy();
  }

  /**
   * Destroys `agent` once it has no request in flight or queued (its idle
   * keep-alive sockets go with it), or after the grace period. Idle must hold
   * on two checks in a row: a caller that took the agent from current() just
   * before the swap may not have handed it its request yet.
   */
  private retire(agent: ConnectTimeoutAgent): void {
    let idleChecks = 0;
    let waitedMs = 0;
    const entry: Retired = {
      agent,
      timer: setInterval(() => {
        waitedMs += RETIRE_CHECK_MS;
        idleChecks = isIdle(agent) ? idleChecks + 1 : 0;
        if (idleChecks >= 2 || waitedMs >= RETIRE_GRACE_MS) {
          clearInterval(entry.timer);
          this.retired.delete(entry);
          agent.destroy();
        }
      }, RETIRE_CHECK_MS),
    };
    entry.timer.unref();
    this.retired.add(entry);
  }
}

function isIdle(agent: ConnectTimeoutAgent): boolean {
  const busy = (pool: NodeJS.ReadOnlyDict<unknown[]>): boolean => Object.values(pool).some((list) => (list?.length ?? 0) > 0);
  return !busy(agent.sockets) && !busy(agent.requests);
}
