import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { type Clock, CLOCK } from '../clock/clock';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import type { LogRecord } from '../reducer/reducer.types';
import { type AppendItem, EventLog, type LoggedEvent } from './event-log';
import { COMPACT_EVERY_MS, COMPACT_NAME } from './outbound.constants';

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * The agent's event log, opened (and repaired) before anything else runs:
 * the reducer's state is rebuilt from it before the boot handshake.
 */
@Injectable()
export class EventLogService implements OnModuleInit, OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(EventLogService.name);
  private log!: EventLog;

  constructor(
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    @Inject(CLOCK) private readonly clock: Clock,
    private readonly scheduler: SchedulerRegistry,
  ) {}

  private opening: Promise<void> | null = null;

  onModuleInit(): Promise<void> {
    this.opening ??= this.open();
    return this.opening;
  }

  /** Resolves once the log is open and repaired; whoever reads it at start awaits this. */
  ready(): Promise<void> {
    return this.onModuleInit();
  }

  private async open(): Promise<void> {
    this.log = await EventLog.open({
      dir: this.config.stateDir,
      maxBytes: this.config.eventLogMaxMb * 1024 * 1024,
      retentionMs: this.config.eventRetentionDays * DAY_MS,
      now: () => this.clock.now(),
      // Background work (grouped syncs of delivery marks, automatic compaction) reports here.
      warn: (line) => this.logger.warn(line),
    });
    const report = this.log.openReport;
    if (report.tornTailBytes > 0) {
      this.logger.warn(
        `event log ${report.path}: a record torn by a crash (${report.tornTailBytes} bytes at the end) was cut off; every event whose append had returned is intact`,
      );
    }
    for (const bad of report.corruptRecords) {
      this.logger.error(`event log ${report.path}: record on line ${bad.line} is damaged (${bad.reason}); skipped, never sent`);
    }
    const stats = this.log.stats();
    this.logger.log(`event log ${report.path}: ${report.events} event(s), ${stats.pending} pending delivery`);
  }

  onApplicationBootstrap(): void {
    this.scheduler.addInterval(
      COMPACT_NAME,
      setInterval(() => {
        this.compact().catch((err: unknown) => this.logger.error(`event log compaction failed: ${(err as Error).message}; retried in an hour`));
      }, COMPACT_EVERY_MS),
    );
  }

  async compact(): Promise<void> {
    const r = await this.log.compact();
    if (r.dropped > 0) {
      const ranges = r.droppedRanges.map((d) => `${d.rolloutId} ${d.from}-${d.to}`).join(', ');
      this.logger.log(
        `event log compacted: ${r.dropped} delivered or refused event(s) dropped by retention or the size cap (${ranges}); ${r.bytesBefore} → ${r.bytesAfter} bytes`,
      );
    }
  }

  append(batch: readonly AppendItem[]): Promise<void> {
    return this.log.append(batch);
  }

  markDelivered(rolloutId: string, seq: number, status: number): Promise<void> {
    return this.log.markDelivered(rolloutId, seq, status);
  }

  markRefused(rolloutId: string, seq: number, status: number, reason: string): Promise<void> {
    return this.log.markRefused(rolloutId, seq, status, reason);
  }

  pending(): LoggedEvent[] {
    return this.log.pending();
  }

  get(rolloutId: string, seq: number): LoggedEvent | undefined {
    return this.log.get(rolloutId, seq);
  }

  events(rolloutId: string): LoggedEvent[] {
    return this.log.events(rolloutId);
  }

  newestRollout(): string | undefined {
    return this.log.newestRollout();
  }

  missing(rolloutId: string, afterSeq: number): number[] {
    return this.log.missing(rolloutId, afterSeq);
  }

  /** Highest seq ever logged for the rollout, even if compaction dropped the event since. */
  lastSeq(rolloutId: string): number {
    return this.log.lastSeq(rolloutId);
  }

  lastDeliveredSeq(rolloutId: string): number | null {
    return this.log.lastDeliveredSeq(rolloutId);
  }

  records(): LogRecord[] {
    return this.log.records();
  }

  stats(): ReturnType<EventLog['stats']> {
    return this.log.stats();
  }

  async onApplicationShutdown(): Promise<void> {
    if (this.scheduler.doesExist('interval', COMPACT_NAME)) this.scheduler.deleteInterval(COMPACT_NAME);
    // Delivery marks are synced lazily; the events themselves already are.
    await this.log.flush();
    await this.log.close();
  }
}
