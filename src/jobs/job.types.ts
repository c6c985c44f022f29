import type { BackoffPolicy } from './backoff';

/** When a job is due. */
export type JobSchedule =
  /**
   * A cadence on the grid of its runs' starts: the next run is due one
   * (jittered) interval after the last one started; slots that pass while a
   * run is in flight are skipped, never made up in a burst.
   */
  | {
      readonly kind: 'every';
      readonly intervalMs: number;
      /** Spread of each interval, e.g. 0.1 for ±10 %; none by default. */
      readonly jitter?: number;
      /** The first run, this long after the job starts; one interval by default. */
      readonly firstAfterMs?: number;
    }
  /** Due again as soon as a run ends (a long-poll); only failures space the runs out. */
  | { readonly kind: 'loop' };

/** What a run reports. A run cut by shutdown reports nothing that counts. */
export type JobResult =
  | { readonly kind: 'ok' }
  /** Retried after the job's backoff, or after `backoff` when the failure asks for other steps. */
  | { readonly kind: 'failed'; readonly cause: string; readonly backoff?: BackoffPolicy }
  /** A failure whose peer said when to come back: the backoff or this, whichever is longer (capped). */
  | { readonly kind: 'retry-after'; readonly cause: string; readonly secs: number; readonly backoff?: BackoffPolicy };

export const ok = (): JobResult => ({ kind: 'ok' });
export const failed = (cause: string, backoff?: BackoffPolicy): JobResult => ({ kind: 'failed', cause, backoff });
export const retryAfter = (secs: number, cause: string, backoff?: BackoffPolicy): JobResult => ({
  kind: 'retry-after',
  cause,
  secs,
  backoff,
});

/** What shutdown does to a run in flight. */
export type ShutdownPolicy =
  /** Cut it at once: it holds nothing the agent must finish (a long-poll, a resendable POST). */
  | { readonly kind: 'abort' }
  /** Let it finish, up to `graceMs`, then cut it. */
  | { readonly kind: 'finish'; readonly graceMs: number };

export interface JobContext {
  /** Aborted when shutdown cuts the run. */
  readonly signal: AbortSignal;
  /** Part of the run worked: a failure later in it starts a new streak, its backoff from the first step. */
  progressed(): void;
}

/** A run that has ended, as the job's `onSettled` sees it. */
export interface SettledRun {
  readonly result: JobResult;
  /** Failures in a row, this run included (0 after a success). */
  readonly consecutiveFailures: number;
  /** Failures in a row before this run. */
  readonly failuresBefore: number;
  /** Until the next run, and when that is (ISO); the delay is the backoff after a failure. */
  readonly delayMs: number;
  readonly nextDueAt: string;
  readonly startedMono: number;
  readonly endedMono: number;
}

export interface JobDefinition {
  readonly name: string;
  /** Waits for the boot-recovery handshake (PROTOCOL §3) before it starts. */
  readonly afterBoot: boolean;
  readonly schedule: JobSchedule;
  readonly backoff: BackoffPolicy;
  /** Default: finish within 5 s. */
  readonly onShutdown?: ShutdownPolicy;
  /** False: registered, but armed only once its owner enables it. */
  readonly enabled?: boolean;
  /** What counts as the job's first run when it starts (the heartbeat: the boot handshake). */
  readonly firstResult?: () => JobResult;
  /** A job with nothing to wait for answers at once. */
  run(context: JobContext): JobResult | Promise<JobResult>;
  /** The job has started; `nextDueAt` is its first run. */
  onStarted?(nextDueAt: string | null): void;
  /** After every run that was not cut by shutdown: where the job says what happened and what comes next. */
  onSettled?(run: SettledRun): void;
}

export type JobState =
  /** Registered; starts with the application, or once boot recovery is over. */
  | 'waiting'
  | 'scheduled'
  | 'running'
  /** Started, but its owner has it switched off. */
  | 'disabled'
  | 'stopped';

/** `JobResult` as status shows it. */
export type JobResultStatus = { kind: 'ok' } | { kind: 'failed'; cause: string } | { kind: 'retry-after'; cause: string; secs: number };

/** What the runtime knows of a job, in wall time, for people and /status. */
export interface JobStatus {
  name: string;
  state: JobState;
  lastStartAt: string | null;
  lastEndAt: string | null;
  lastResult: JobResultStatus | null;
  nextDueAt: string | null;
  consecutiveFailures: number;
  /** The first failure of the current streak; null while the last run worked. */
  failingSince: string | null;
  /** Due times that passed while a run was in flight, and were skipped (at most one counted per run). */
  skippedTicks: number;
}

/** The same in monotonic milliseconds, for liveness: a wall-clock step bends none of it. */
export interface JobProgress {
  startedMono: number | null;
  lastStartMono: number | null;
  lastEndMono: number | null;
  lastOkMono: number | null;
  nextDueMono: number | null;
  inFlightSinceMono: number | null;
}

/** What an owner holds of its registered job. */
export interface JobHandle {
  readonly name: string;
  /** Runs the job if it is due and not in flight (a decorated tick's handler; tests on a fake clock). */
  tick(): void;
  /** Something changed: run as soon as no run is in flight and no backoff is pending. */
  trigger(): void;
  /** Runs now, out of schedule (tests, an operator's request); while a run is in flight, waits for that one instead. */
  runNow(): Promise<void>;
  enable(): void;
  disable(): void;
  /** Resolves when no run is in flight (nor one about to follow a trigger). */
  settled(): Promise<void>;
  status(): JobStatus;
  progress(): JobProgress;
}
