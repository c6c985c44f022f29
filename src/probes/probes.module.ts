import { HttpModule } from '@nestjs/axios';
import { Module } from '@nestjs/common';
import { JobsModule } from '../jobs/jobs.module';
import { LifecycleModule } from '../lifecycle/lifecycle.module';
import { CurrentSystemReader } from '../recovery/current-system.reader';
import { serveEffectPort } from '../reducer/effect-ports';
import { ReducerModule } from '../reducer/reducer.module';
import { AGENT_VERSION } from '../version';
import { TrustModule } from '../trust/trust.module';
import { TrustService } from '../trust/trust.service';
import { HEALTH_GATE } from './health-gate';
import { DEFAULT_PROBE_TOOLS, PROBE_TOOLS, ProbeChecker } from './probe-checker';
import { ProbeRunnerService } from './probe-runner.service';
import { ProbesStatusContributor } from './probes.status';

/**
 * The health probes of PROTOCOL §10: serves the reducer's ResetProbeCache
 * port; each probe is a job of the runtime; results go back to the reducer
 * as inputs. Its HTTP client is its own: probes go to the host's services,
 * never with the agent's client certificate or the CP's headers.
 */
@Module({
  imports: [
    ReducerModule,
    JobsModule,
    LifecycleModule,
    TrustModule,
    HttpModule.register({
      headers: { 'User-Agent': `nixfleet-agent/${AGENT_VERSION} (health probe)` },
      maxRedirects: 0,
      proxy: false,
    }),
  ],
  providers: [
    CurrentSystemReader,
    // The verified manifest's healthGate (PROTOCOL §10, §12): it wins over anything local.
    { provide: HEALTH_GATE, useExisting: TrustService },
    { provide: PROBE_TOOLS, useValue: DEFAULT_PROBE_TOOLS },
    ProbeChecker,
    ProbeRunnerService,
    serveEffectPort('ResetProbeCache', ProbeRunnerService),
    ProbesStatusContributor,
  ],
  exports: [ProbeRunnerService, ProbesStatusContributor],
})
export class ProbesModule {}
