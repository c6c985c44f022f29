import {
  type BeforeApplicationShutdown,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { BootGate } from '../lifecycle/boot-gate';
import { CurrentSystemReader } from '../recovery/current-system.reader';
import { ReducerService } from '../reducer/reducer.service';

/** Soak and sustained-failure deadlines are whole seconds; a tick costs a readlink and one reducer input. */
export const ADVANCE_TICK_MS = 1_000;
export const ADVANCE_TICK_NAME = 'advance-tick';

/**
 * Feeds the reducer its `Tick`: time passing is an input like any other, so
 * a Soaking rollout converges (or fails) inside the one mutator.
 */
@Injectable()
export class AdvanceTicker implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(AdvanceTicker.name);
  private inFlight: Promise<void> | null = null;
  private stopped = false;

  constructor(
    private readonly reducer: ReducerService,
    private readonly currentSystem: CurrentSystemReader,
    private readonly scheduler: SchedulerRegistry,
    private readonly bootGate: BootGate,
  ) {}

  onApplicationBootstrap(): void {
    this.bootGate.whenOpen().then(
      () => {
        if (this.stopped) return;
        this.scheduler.addInterval(ADVANCE_TICK_NAME, setInterval(() => this.tick(), ADVANCE_TICK_MS));
      },
      (err: unknown) => this.logger.error(`advance ticker not started: ${String(err)}`),
    );
  }

  /** One tick; skipped while the previous one is still queued. Public so tests drive it. */
  tick(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (!this.inFlight) {
      this.inFlight = this.submit().finally(() => {
        this.inFlight = null;
      });
    }
    return this.inFlight;
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.stopped = true;
    if (this.scheduler.doesExist('interval', ADVANCE_TICK_NAME)) this.scheduler.deleteInterval(ADVANCE_TICK_NAME);
    await this.inFlight;
  }

  private async submit(): Promise<void> {
    try {
      await this.reducer.submit({ type: 'Tick', currentClosure: await this.currentSystem.read() });
    } catch (err) {
      this.logger.warn(`advance tick not applied: ${(err as Error).message}; the next tick tries again`);
    }
  }
}
