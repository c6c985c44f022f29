import { Inject, Injectable, type OnApplicationShutdown } from '@nestjs/common';
import { TIMEOUTS } from '../protocol/protocol.constants';
import { TLS_IDENTITY } from './comms.constants';
import type { TlsIdentity } from './identity';
import { buildTlsAgent, type ConnectTimeoutAgent } from './tls-agent';

/** The https.Agent in use. Callers ask for it per request so a renewed identity applies to new connections. */
@Injectable()
export class TlsAgentHolder implements OnApplicationShutdown {
  private agent: ConnectTimeoutAgent;
  private identity: TlsIdentity;

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

  // The last shutdown phase: an in-flight heartbeat is let finish before its sockets go.
  onApplicationShutdown(): void {
    this.agent.destroy();
  }
}
