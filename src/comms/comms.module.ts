import { HttpModule } from '@nestjs/axios';
import { Module } from '@nestjs/common';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { JobsModule } from '../jobs/jobs.module';
import { HEADER_PROTOCOL, MAX_RESPONSE_BYTES, PROTOCOL_MAJOR } from '../protocol/protocol.constants';
import { AGENT_VERSION } from '../version';
import { ClockSkew } from './clock-skew';
import { CommsStatusContributor } from './comms.status';
import { TLS_IDENTITY } from './comms.constants';
import { ControlPlaneClient } from './control-plane.client';
import { loadIdentity, type TlsIdentity } from './identity';
import { IdentityWatcher } from './identity-watcher';
import { TlsAgentHolder } from './tls-agent.holder';

/**
 * main.ts has already read and checked these files (a bad one is exit 2
 * before anything starts); this is the identity put into use. A change
 * since then is the watcher's to take, as at any later time.
 */
function startupIdentity(config: AgentConfig): TlsIdentity {
  return loadIdentity(config);
}

/**
 * The one way to the control plane: the mTLS HttpService, configured once,
 * the typed client on top of it, and the watcher that puts a renewed client
 * identity into use.
 */
@Module({
  imports: [
    JobsModule,
    HttpModule.register({
      headers: {
        [HEADER_PROTOCOL]: String(PROTOCOL_MAJOR),
        'User-Agent': `nixfleet-agent/${AGENT_VERSION}`,
        Accept: 'application/json',
      },
      maxContentLength: MAX_RESPONSE_BYTES,
      maxBodyLength: MAX_RESPONSE_BYTES,
      maxRedirects: 0,
      responseType: 'text',
      // Bodies go out as the caller wrote them: axios's default would JSON-parse every body it is handed as a string, to check it.
      transformRequest: [(data: unknown) => data],
      transformResponse: [(data: unknown) => data],
      // Node's http(s) transport; no per-request search among xhr/http/fetch.
      adapter: 'http',
      // Every status is the caller's to judge (PROTOCOL §6 treats 409 and 4xx differently).
      validateStatus: () => true,
      proxy: false,
    }),
  ],
  providers: [
    { provide: TLS_IDENTITY, inject: [AGENT_CONFIG], useFactory: startupIdentity },
    TlsAgentHolder,
    ControlPlaneClient,
    IdentityWatcher,
    ClockSkew,
    CommsStatusContributor,
  ],
  exports: [ControlPlaneClient, TlsAgentHolder, IdentityWatcher, ClockSkew, CommsStatusContributor],
})
export class CommsModule {}
