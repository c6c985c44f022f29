import { type DynamicModule, Global, Module } from '@nestjs/common';
import type { AgentConfig } from './config.loader';
import { AGENT_CONFIG } from './config.constants';

/** Holds the settings validated by main.ts before Nest starts; nothing here reads the environment. */
@Global()
@Module({})
export class ConfigModule {
  static forRoot(config: AgentConfig): DynamicModule {
    return {
      module: ConfigModule,
      providers: [{ provide: AGENT_CONFIG, useValue: config }],
      exports: [AGENT_CONFIG],
    };
  }
}
