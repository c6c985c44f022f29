import { Module } from '@nestjs/common';
import { CommsModule } from '../comms/comms.module';
import { LifecycleModule } from '../lifecycle/lifecycle.module';
import { OutboundModule } from '../outbound/outbound.module';
import { ReducerModule } from '../reducer/reducer.module';
import { CurrentSystemReader } from './current-system.reader';
import { HeartbeatExchange } from './heartbeat-exchange';
import { RecoveryService } from './recovery.service';
import { RecoveryStatusContributor } from './recovery.status';

/**
 * What the host runs and what the CP remembers of it: the closure reader,
 * the heartbeat exchange, and the boot-recovery handshake (which opens the
 * boot gate). Its ports (recovery.ports.ts) are provided by OutboundModule.
 */
@Module({
  imports: [CommsModule, ReducerModule, OutboundModule, LifecycleModule],
  providers: [CurrentSystemReader, HeartbeatExchange, RecoveryService, RecoveryStatusContributor],
  exports: [CurrentSystemReader, HeartbeatExchange, RecoveryService, RecoveryStatusContributor],
})
export class RecoveryModule {}
