import { type DynamicModule, Module, type ModuleMetadata } from '@nestjs/common';
import { REDUCER_POLICY } from './reducer.ports';
import { ReducerService } from './reducer.service';
import type { Policy } from './reducer.types';

/**
 * The rollout state machine. `portModules` are the modules that provide its
 * effect ports; the reducer itself imports none of them.
 */
@Module({})
export class ReducerModule {
  static forRoot(policy: Policy, portModules: NonNullable<ModuleMetadata['imports']> = []): DynamicModule {
    return {
      module: ReducerModule,
      global: true,
      imports: portModules,
      providers: [{ provide: REDUCER_POLICY, useValue: policy }, ReducerService],
      exports: [ReducerService],
    };
  }
}
