import { Module } from '@nestjs/common';
import { HeartbeatService } from './heartbeat.service';

/** The steady-state heartbeat job. Recovery (its exchange and handshake) is provided by the root module's imports. */
@Module({
  providers: [HeartbeatService],
  exports: [HeartbeatService],
})
export class HeartbeatModule {}
