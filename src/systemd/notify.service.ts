import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { HealthService } from '../health/health.service';
import { JobRuntime } from '../jobs/job-runtime.service';
import { type JobHandle, ok } from '../jobs/job.types';
import { BootGate } from '../lifecycle/boot-gate';
import { AgentSummary } from './agent-summary';
import { type NotifyField, notifyDatagram, statusLine, watchdogPeriodMs } from './notify.format';
import { NotifySocket } from './notify.socket';
import { STATUS_INTERVAL_NAME, STATUS_REFRESH_MS, WATCHDOG_INTERVAL_NAME } from './systemd.constants';

type Phase = 'idle' | 'booting' | 'running' | 'stopping';

/**
 * Tells systemd how the agent is doing (Type=notify): READY=1 once the
 * boot-recovery handshake is over, WATCHDOG=1 at half the watchdog period but
 * only while the agent is live (so a wedged job gets it restarted), a one-line
 * STATUS=, and STOPPING=1 as soon as shutdown begins. Without NOTIFY_SOCKET it
 * does nothing at all.
 */
@Injectable()
export class NotifyService implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly logger = new Logger(NotifyService.name);
  private phase: Phase = 'idle';
  private lastStatus: string | null = null;
  /** The failing checks of the current liveness episode; null while live. */
  private notLive: string | null = null;
  private readonly statusJob: JobHandle;
  /** Null when systemd asked this process for no pings. */
  private readonly watchdogJob: JobHandle | null;

  constructor(
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    private readonly socket: NotifySocket,
    private readonly health: HealthService,
    private readonly summary: AgentSummary,
    private readonly bootGate: BootGate,
    runtime: JobRuntime,
  ) {
    // Both switched on by this service: STATUS= once it knows systemd listens, WATCHDOG= at READY=1.
    this.statusJob = runtime.register({
      name: STATUS_INTERVAL_NAME,
      afterBoot: false,
      enabled: false,
      schedule: { kind: 'every', intervalMs: STATUS_REFRESH_MS },
      backoff: { firstMs: STATUS_REFRESH_MS, capMs: STATUS_REFRESH_MS },
      run: () => {
        this.statusTick();
        return ok();
      },
    });
    const usec = config.systemd.watchdogUsec;
    this.watchdogJob =
      usec === null
        ? null
        : runtime.register({
            name: WATCHDOG_INTERVAL_NAME,
            afterBoot: false,
            enabled: false,
            schedule: { kind: 'every', intervalMs: watchdogPeriodMs(usec) },
            backoff: { firstMs: watchdogPeriodMs(usec), capMs: watchdogPeriodMs(usec) },
            run: () => {
              this.watchdogTick();
              return ok();
            },
          });
  }

  onApplicationBootstrap(): void {
    if (!this.socket.enabled) return;
    this.phase = 'booting';
    this.statusTick();
    this.statusJob.enable();
    this.bootGate.whenOpen().then(
      () => this.ready(),
      (err: unknown) => this.logger.error(`READY=1 not sent: ${String(err)}`),
    );
  }

  /** Public so tests can drive it without waiting for the interval. */
  watchdogTick(): void {
    // Never before READY=1, and only when systemd asked this process for pings.
    if (this.phase !== 'running' || this.config.systemd.watchdogUsec === null) return;
    const failing = this.health.liveness().checks.filter((c) => !c.ok);
    if (failing.length === 0) {
      if (this.notLive !== null) {
        this.logger.log(`live again (was failing: ${this.notLive}); WATCHDOG=1 pings resume`);
        this.notLive = null;
        this.statusTick();
      }
      this.send([{ kind: 'watchdog' }]);
      return;
    }
    if (this.notLive !== null) return; // one warning per episode
    this.notLive = failing.map((c) => c.name).join(', ');
    const timeoutSecs = (this.config.systemd.watchdogUsec ?? 0) / 1e6;
    this.logger.warn(
      `liveness check failed: ${failing.map((c) => `${c.name} (${c.detail})`).join('; ')}; WATCHDOG=1 is withheld, so systemd restarts the agent within ${timeoutSecs} s unless it recovers first`,
    );
    this.statusTick();
  }

  /** Sends STATUS= when its text changed. Public so tests can drive it. */
  statusTick(): void {
    if (this.phase !== 'booting' && this.phase !== 'running') return;
    const text = this.statusText(this.phase);
    if (text === this.lastStatus) return;
    this.lastStatus = text;
    this.send([{ kind: 'status', text }]);
  }

  /**
   * Nest runs every onModuleDestroy before any beforeApplicationShutdown, and
   * this module's before deeper ones': systemd learns of the stop before the
   * heartbeat (up to its 10 s deadline) and the drainer finish. The socket
   * itself closes in NotifySocket.onApplicationShutdown, last.
   */
  onModuleDestroy(): void {
    this.watchdogJob?.disable();
    this.statusJob.disable();
    if (this.phase === 'idle' || this.phase === 'stopping') return;
    this.phase = 'stopping';
    this.send([{ kind: 'stopping' }, { kind: 'status', text: statusLine({ phase: 'stopping' }) }]);
  }

  private ready(): void {
    // A stop during the handshake wins: READY=1 after STOPPING=1 would confuse systemd.
    if (this.phase !== 'booting') return;
    this.phase = 'running';
    const text = this.statusText('running');
    this.lastStatus = text;
    this.send([{ kind: 'ready' }, { kind: 'status', text }]);
    const usec = this.config.systemd.watchdogUsec;
    if (usec !== null && this.watchdogJob) {
      const periodMs = watchdogPeriodMs(usec);
      this.watchdogJob.enable();
      this.logger.log(`systemd watchdog: WATCHDOG=1 every ${periodMs / 1000} s while live (timeout ${usec / 1e6} s)`);
    }
  }

  private statusText(phase: 'booting' | 'running'): string {
    try {
      return statusLine(this.summary.read(phase));
    } catch (err) {
      // A timer callback must not throw; the line says what it could not read.
      return `status unavailable: ${(err as Error).message}`;
    }
  }

  private send(fields: readonly NotifyField[]): void {
    this.socket.send(notifyDatagram(fields));
  }
}
