import { type DynamicModule, Module, type ModuleMetadata } from '@nestjs/common';
import { CLOCK_SKEW_SOURCE } from '../comms/identity-watcher';
import { CurrentSystemReader } from './current-system.reader';
import { HeartbeatExchange } from './heartbeat-exchange';
import { RecoveryService } from './recovery.service';

/**
 * What the host runs and what the CP remembers of it: the closure reader,
 * the heartbeat exchange, and the boot-recovery handshake. `portModules`
 * provide the replay port.
 */
@Module({})
export class RecoveryModule {
  static forRoot(portModules: NonNullable<ModuleMetadata['imports']> = []): DynamicModule {
    return {
      module: RecoveryModule,
      global: true,
      imports: portModules,
      providers: [
        CurrentSystemReader,
        HeartbeatExchange,
        RecoveryService,
        // The skew estimate the certificate checks quote when a cert looks expired.
        { provide: CLOCK_SKEW_SOURCE, useExisting: HeartbeatExchange },
      ],
      exports: [CurrentSystemReader, HeartbeatExchange, RecoveryService, CLOCK_SKEW_SOURCE],
    };
  }
}
