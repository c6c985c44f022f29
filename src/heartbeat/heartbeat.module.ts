import { Module } from '@nestjs/common';
import { JobsModule } from '../jobs/jobs.module';
import { RecoveryModule } from '../recovery/recovery.module';
import { HeartbeatService } from './heartbeat.service';
import { HeartbeatStatusContributor } from './heartbeat.status';

/** The steady-state heartbeat job; each beat is recovery's heartbeat exchange, started once the boot handshake is over. */
@Module({
  imports: [RecoveryModule, JobsModule],
  providers: [HeartbeatService, HeartbeatStatusContributor],
  exports: [HeartbeatService, HeartbeatStatusContributor],
})
export class HeartbeatModule {}
