import { Inject, Injectable } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import type { StatusContributor } from '../common/status-contributor';
import { CurrentSystemReader } from '../recovery/current-system.reader';
import { REDUCER_INPUT, REDUCER_POLICY, type ReducerInputPort } from '../reducer/reducer.ports';
import { rolloutHealth } from '../reducer/rollout-health';
import type { Policy } from '../reducer/reducer.types';
import { ProbeRunnerService } from './probe-runner.service';
import type { ProbesStatus } from './probes.status.types';

export interface ProbesStatusPart {
  probes: ProbesStatus;
}

/** `/status` `probes`: the runners, and why each soaking rollout has not converged yet. */
@Injectable()
export class ProbesStatusContributor implements StatusContributor<ProbesStatusPart> {
  constructor(
    private readonly runner: ProbeRunnerService,
    private readonly currentSystem: CurrentSystemReader,
    @Inject(REDUCER_INPUT) private readonly reducer: ReducerInputPort,
    @Inject(REDUCER_POLICY) private readonly policy: Policy,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  async statusPart(): Promise<ProbesStatusPart> {
    // One instant for the whole part: the state and the clock first, then the link.
    const state = this.reducer.current();
    const now = this.clock.now();
    const runner = this.runner.status();
    const entries = Object.values(state.rollouts);
    const latest = entries.reduce<(typeof entries)[number] | undefined>(
      (best, e) => (best === undefined || Date.parse(e.dispatchedAt) > Date.parse(best.dispatchedAt) ? e : best),
      undefined,
    );
    const shown = entries
      .filter((e) => e.state === 'Soaking' || e === latest)
      .sort((a, b) => Date.parse(a.dispatchedAt) - Date.parse(b.dispatchedAt) || a.rolloutId.localeCompare(b.rolloutId));
    const current = shown.some((e) => e.state === 'Soaking') ? await this.currentSystem.read() : null;
    return {
      probes: { ...runner, rollouts: shown.map((e) => rolloutHealth(e, current, now, this.policy)) },
    };
  }
}
