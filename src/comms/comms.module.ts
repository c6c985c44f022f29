import { HttpModule } from '@nestjs/axios';
import { type DynamicModule, Module } from '@nestjs/common';
import { JobsModule } from '../jobs/jobs.module';
import { HEADER_PROTOCOL, MAX_RESPONSE_BYTES, PROTOCOL_MAJOR } from '../protocol/protocol.constants';
import { AGENT_VERSION } from '../version';
import { TLS_IDENTITY } from './comms.constants';
import { ControlPlaneClient } from './control-plane.client';
import type { TlsIdentity } from './identity';
import { IdentityWatcher } from './identity-watcher';
import { TlsAgentHolder } from './tls-agent.holder';

/**
 * The one way to the control plane: the mTLS HttpService, configured once,
 * the typed client on top of it, and the watcher that puts a renewed client
 * identity into use.
 */
@Module({})
export class CommsModule {
  static forRoot(identity: TlsIdentity): DynamicModule {
    return {
      module: CommsModule,
      global: true,
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
          transformResponse: [(data: unknown) => data],
          // Every status is the caller's to judge (PROTOCOL §6 treats 409 and 4xx differently).
          validateStatus: () => true,
          proxy: false,
        }),
      ],
      providers: [
        { provide: TLS_IDENTITY, useValue: identity },
        TlsAgentHolder,
        ControlPlaneClient,
        IdentityWatcher,
      ],
      exports: [ControlPlaneClient, TlsAgentHolder, IdentityWatcher],
    };
  }
}
