import { Module } from '@nestjs/common';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { EffectPortRegistry } from './effect-ports';
import { REDUCER_INPUT, REDUCER_POLICY } from './reducer.ports';
import { ReducerService } from './reducer.service';
import { ReducerStatusContributor } from './reducer.status';
import type { Policy } from './reducer.types';
import { RolloutHistory } from './rollout-history';

export function policyFrom(config: AgentConfig): Policy {
  return { onHealthFailure: config.onHealthFailure, sustainedFailureThresholdSecs: config.probeFailureThreshold };
}

/**
 * The rollout state machine: its input queue (REDUCER_INPUT; ReducerService
 * for readers of its state and statistics), the registry its effect ports
 * are served through, and the rollouts' recent transitions (RolloutHistory).
 * It imports no feature module: one that serves a port imports this one and
 * binds itself (see effect-ports.ts).
 */
@Module({
  providers: [
    { provide: REDUCER_POLICY, inject: [AGENT_CONFIG], useFactory: policyFrom },
    EffectPortRegistry,
    ReducerService,
    { provide: REDUCER_INPUT, useExisting: ReducerService },
    ReducerStatusContributor,
    RolloutHistory,
  ],
  exports: [ReducerService, REDUCER_INPUT, REDUCER_POLICY, EffectPortRegistry, ReducerStatusContributor, RolloutHistory],
})
export class ReducerModule {}
