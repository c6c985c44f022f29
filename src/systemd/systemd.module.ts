import { Module } from '@nestjs/common';
import { HealthModule } from '../health/health.module';
import { HeartbeatModule } from '../heartbeat/heartbeat.module';
import { JobsModule } from '../jobs/jobs.module';
import { LifecycleModule } from '../lifecycle/lifecycle.module';
import { OutboundModule } from '../outbound/outbound.module';
import { ReducerModule } from '../reducer/reducer.module';
import { AgentSummary } from './agent-summary';
import { NotifyService } from './notify.service';
import { NotifySocket } from './notify.socket';

/**
 * sd_notify(3) to systemd: READY=1, WATCHDOG=1 while live, STATUS=, STOPPING=1.
 * Imported by the root module only, so its onModuleDestroy (STOPPING=1) runs
 * before the deeper modules' shutdown work. Nothing imports it; it exports nothing.
 */
@Module({
  imports: [HealthModule, HeartbeatModule, OutboundModule, ReducerModule, LifecycleModule, JobsModule],
  providers: [NotifySocket, AgentSummary, NotifyService],
})
export class SystemdModule {}
