import { Module } from '@nestjs/common';
import { RecoveryModule } from '../recovery/recovery.module';
import { HeartbeatService } from './heartbeat.service';

/** The steady-state heartbeat job; each beat is recovery's heartbeat exchange, started once the boot handshake is over. */
@Module({
  imports: [RecoveryModule],
  providers: [HeartbeatService],
  exports: [HeartbeatService],
})
export class HeartbeatModule {}
