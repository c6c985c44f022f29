import { open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Inject, Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { JobRuntime } from '../jobs/job-runtime.service';
import { failed, type JobHandle, type JobResult, ok } from '../jobs/job.types';
import { MetricsService } from '../metrics/metrics.service';
import type { LogRecord } from '../reducer/reducer.types';
import { type AppendItem, EventLog, EventLogWriteError, type LoggedEvent } from './event-log';
import type { LogFs } from './log-fs';
import { COMPACT_EVERY_MS, COMPACT_NAME, EVENT_LOG_FS } from './outbound.constants';

const DAY_MS = 24 * 60 * 60 * 1000;
/** While writes fail, the state dir is probed this often, so health returns without waiting for the next event. */
export const WRITE_PROBE_MS = 5_000;
export const WRITE_PROBE_NAME = 'outbound-write-probe';
/** A page: on a full file system even one byte needs a whole free block. */
const WRITE_PROBE_BYTES = 4096;
const WRITE_PROBE_FILE = 'events.log.probe';
/**
 * Causes a probe file beside the log can rule out: they belong to the file
 * system, not to the log file. Any other (EIO on the log, EFBIG, EPERM) is
 * cleared only by an append to the log itself that works.
 */
const PROBE_CLEARS: ReadonlySet<string> = new Set(['ENOSPC', 'EDQUOT', 'EROFS']);

/** `/status` `eventLog`: can the agent make events durable right now. */
export interface EventLogWriteHealth {
  path: string;
  /** First failed write of the current streak; null while writes work. */
  failingSince: string | null;
  failuresInStreak: number;
  /** Failed writes (events and delivery marks) since start. */
  failuresTotal: number;
  /** The last failure, kept after writes work again; `cause` is the errno text, `message` the whole story. */
  lastError: { message: string; cause: string; code: string | null; at: string } | null;
  /** Why the log refuses every write until the agent restarts (a failed write could not be cut back); null when it does not. */
  refusingWrites: string | null;
  /** What clears a failing streak: the write probe (a file-system cause such as ENOSPC), or only an append that works; null while writes work. */
  clearedBy: 'probe' | 'append' | null;
}

/**
 * The agent's event log, opened (and repaired) before anything else runs:
 * the reducer's state is rebuilt from it before the boot handshake. Two jobs
 * of the runtime keep it: compaction, hourly from the start, and the write
 * probe, switched on only while writes fail for a file-system cause.
 */
@Injectable()
export class EventLogService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(EventLogService.name);
  private log!: EventLog;
  private failingSince: Date | null = null;
  /** The same moment on the monotonic clock: how long writes have failed must not move with a wall-clock step. */
  private failingSinceMono: number | null = null;
  private failuresInStreak = 0;
  private failuresTotal = 0;
  private lastError: EventLogWriteHealth['lastError'] = null;
  private readonly probe: JobHandle;

  constructor(
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    @Inject(CLOCK) private readonly clock: Clock,
    runtime: JobRuntime,
    private readonly metrics: MetricsService,
    @Inject(EVENT_LOG_FS) private readonly fs: LogFs,
  ) {
    runtime.register({
      name: COMPACT_NAME,
      afterBoot: false,
      schedule: { kind: 'every', intervalMs: COMPACT_EVERY_MS },
      backoff: { firstMs: COMPACT_EVERY_MS, capMs: COMPACT_EVERY_MS },
      run: () => this.compactJob(),
    });
    this.probe = runtime.register({
      name: WRITE_PROBE_NAME,
      afterBoot: false,
      enabled: false,
      schedule: { kind: 'every', intervalMs: WRITE_PROBE_MS },
      backoff: { firstMs: WRITE_PROBE_MS, capMs: WRITE_PROBE_MS },
      run: () => this.probeJob(),
    });
  }

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
      fs: this.fs,
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

  private async compactJob(): Promise<JobResult> {
    try {
      await this.compact();
      return ok();
    } catch (err) {
      const cause = (err as Error).message;
      this.logger.error(`event log compaction failed: ${cause}; retried in an hour`);
      return failed(cause);
    }
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

  async append(batch: readonly AppendItem[]): Promise<void> {
    await this.tracked(this.log.append(batch));
    if (batch.length > 0) this.writesWork('an append');
  }

  // A mark that fails is a failed write too; one that succeeds may have written nothing, so it clears nothing.
  markDelivered(rolloutId: string, seq: number, status: number): Promise<void> {
    return this.tracked(this.log.markDelivered(rolloutId, seq, status));
  }

  markRefused(rolloutId: string, seq: number, status: number, reason: string): Promise<void> {
    return this.tracked(this.log.markRefused(rolloutId, seq, status, reason));
  }

  /** Whether events can be made durable now; /status, /readyz, STATUS= and the metrics read it. */
  writeHealth(): EventLogWriteHealth {
    return {
      path: this.log.path,
      failingSince: this.failingSince?.toISOString() ?? null,
      failuresInStreak: this.failuresInStreak,
      failuresTotal: this.failuresTotal,
      lastError: this.lastError && { ...this.lastError },
      refusingWrites: this.log.refusingWrites,
      clearedBy: this.failingSince === null ? null : this.probeClears() ? 'probe' : 'append',
    };
  }

  private probeClears(): boolean {
    return this.lastError?.code != null && PROBE_CLEARS.has(this.lastError.code);
  }

  /** Seconds the current streak of failed writes has lasted, on the monotonic clock; null while writes work. */
  failingForSecs(): number | null {
    return this.failingSinceMono === null ? null : Math.max(0, (this.clock.monotonicMs() - this.failingSinceMono) / 1000);
  }

  /** One probe of the state dir: a write and an fdatasync beside the log. Public so tests can run it. */
  async probeWrites(): Promise<boolean> {
    // An append that fails while the probe runs outweighs it.
    const failuresBefore = this.failuresTotal;
    const path = join(this.config.stateDir, WRITE_PROBE_FILE);
    try {
      const file = await open(path, 'w', 0o600);
      try {
        await file.write(Buffer.alloc(WRITE_PROBE_BYTES), 0, WRITE_PROBE_BYTES, 0);
        await file.datasync();
      } finally {
        await file.close();
      }
      await unlink(path);
    } catch {
      await unlink(path).catch(() => undefined);
      return false;
    }
    // A log that could not cut back a failed write stays refused whatever the disk does.
    if (this.log.refusingWrites !== null) return false;
    if (this.failuresTotal !== failuresBefore || !this.probeClears()) return false;
    this.writesWork('a write probe');
    return true;
  }

  private async probeJob(): Promise<JobResult> {
    return (await this.probeWrites().catch(() => false)) ? ok() : failed('the state directory still refuses writes');
  }

  private async tracked(write: Promise<void>): Promise<void> {
    try {
      await write;
    } catch (err) {
      // Only the disk's refusals: a refused batch (a reused seq) is the caller's bug, and says nothing of the disk.
      if (err instanceof EventLogWriteError) this.writeFailed(err);
      throw err;
    }
  }

  private writeFailed(err: EventLogWriteError): void {
    const at = this.clock.now();
    const cause = causeText(err);
    this.failuresTotal += 1;
    this.failuresInStreak += 1;
    this.lastError = { message: err.message, cause, code: err.code ?? null, at: at.toISOString() };
    this.metrics.recordEventLogAppendFailure(at.getTime() / 1000);
    if (this.probeClears()) this.startProbing();
    if (this.failingSince !== null) return;
    this.failingSince = at;
    this.failingSinceMono = this.clock.monotonicMs();
    const clears = this.probeClears()
      ? `probed every ${WRITE_PROBE_MS / 1000} s`
      : 'an append to the log itself must work, a probe beside it proves nothing';
    this.logger.error(
      `event log ${this.log.path}: writes fail (${cause}); new events cannot be made durable, so none is sent and no rollout moves; status is DEGRADED until a write works again (${clears})`,
    );
  }

  private writesWork(how: string): void {
    if (this.failingSince === null) return;
    this.logger.log(
      `event log ${this.log.path}: ${how} worked again after ${this.failuresInStreak} failed write(s) since ${this.failingSince.toISOString()}; events are made durable again`,
    );
    this.failingSince = null;
    this.failingSinceMono = null;
    this.failuresInStreak = 0;
    this.stopProbing();
  }

  private startProbing(): void {
    this.probe.enable();
  }

  private stopProbing(): void {
    this.probe.disable();
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

  /** The job runtime has stopped compaction and the probe by now (before any onApplicationShutdown). */
  async onApplicationShutdown(): Promise<void> {
    // Delivery marks are synced lazily; the events themselves already are.
    await this.log.flush();
    await this.log.close();
  }
}

/** The errno text under the log's own message; duck-typed, as fs errors may come from another realm. */
function causeText(err: EventLogWriteError): string {
  const cause = err.cause as { message?: unknown } | undefined;
  return typeof cause?.message === 'string' ? cause.message : err.message;
}
