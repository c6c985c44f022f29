import { Injectable, Logger } from '@nestjs/common';
import { JobRuntime } from '../jobs/job-runtime.service';
import { failed, type JobHandle, type JobResult, ok } from '../jobs/job.types';
import { CurrentSystemReader } from '../recovery/current-system.reader';
import { ReducerService } from '../reducer/reducer.service';

/** Soak and sustained-failure deadlines are whole seconds; a tick costs a readlink and one reducer input. */
export const ADVANCE_TICK_MS = 1_000;
export const ADVANCE_TICK_NAME = 'advance-tick';

/**
 * Feeds the reducer its `Tick`: time passing is an input like any other, so
 * a Soaking rollout converges (or fails) inside the one mutator. A job of
 * the runtime, every second once boot recovery is over, but only while some
 * rollout is Soaking: a tick judges nothing else, and an agent with nothing
 * to soak should not wake for it. A tick still queued in the reducer when
 * the next falls due is not doubled.
 */
@Injectable()
export class AdvanceTicker {
  private readonly logger = new Logger(AdvanceTicker.name);
  private readonly job: JobHandle;

  constructor(
    private readonly reducer: ReducerService,
    private readonly currentSystem: CurrentSystemReader,
    runtime: JobRuntime,
  ) {
    this.job = runtime.register({
      name: ADVANCE_TICK_NAME,
      afterBoot: true,
      // Switched on by the reducer's state, below.
      enabled: false,
      schedule: { kind: 'every', intervalMs: ADVANCE_TICK_MS },
      // A failed tick changes nothing that waiting would fix sooner: the next one is on the usual beat.
      backoff: { firstMs: ADVANCE_TICK_MS, capMs: ADVANCE_TICK_MS },
      run: () => this.submit(),
    });
    // A rollout enters Soaking by a transition (or a snapshot, or the log at start): its first tick is one interval later.
    reducer.watch((state) => {
      if (Object.values(state.rollouts).some((r) => r.state === 'Soaking')) this.job.enable();
      else this.job.disable();
    });
  }

  /** One tick now; while one is still queued, waits for it instead. Public so tests drive it. */
  tick(): Promise<void> {
    return this.job.runNow();
  }

  private async submit(): Promise<JobResult> {
    try {
      await this.reducer.submit({ type: 'Tick', currentClosure: await this.currentSystem.read() });
      return ok();
    } catch (err) {
      const cause = (err as Error).message;
      this.logger.warn(`advance tick not applied: ${cause}; the next tick tries again`);
      return failed(cause);
    }
  }
}
