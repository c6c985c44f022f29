import { type DynamicModule, Module } from '@nestjs/common';
import { AdminModule } from './admin/admin.module';
import { ClockModule } from './clock/clock.module';
import { CommsModule } from './comms/comms.module';
import type { TlsIdentity } from './comms/identity';
import type { AgentConfig } from './config/config.loader';
import { ConfigModule } from './config/config.module';

/** The root module: the feature modules, wired by DI; nothing else. */
@Module({})
export class AgentModule {
  static forRoot(config: AgentConfig, identity: TlsIdentity): DynamicModule {
    return {
      module: AgentModule,
      imports: [ConfigModule.forRoot(config), ClockModule, CommsModule.forRoot(identity), AdminModule],
    };
  }
}
