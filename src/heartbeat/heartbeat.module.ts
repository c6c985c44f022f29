import { Module } from '@nestjs/common';
import { JobsModule } from '../jobs/jobs.module';
import { HeartbeatService } from './heartbeat.service';

/** The steady-state heartbeat job. Recovery (its exchange and handshake) is provided by the root module's imports. */
@Module({
  imports: [JobsModule],
  providers: [HeartbeatService],
  exports: [HeartbeatService],
})
export class HeartbeatModule {}
