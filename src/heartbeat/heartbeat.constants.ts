/** Name of the job: its decorated tick in the SchedulerRegistry, and its entry (and armed timeout) in the job runtime. */
export const HEARTBEAT_INTERVAL_NAME = 'heartbeat';
/**
 * The decorated tick. Each beat is sent by the timeout the job runtime arms
 * for its jittered due time, whatever the interval; the tick asks the same
 * question on a fixed period, a backstop that costs an idle agent one
 * wake-up in 10 s rather than 4 a second. Were a timeout ever lost, a beat
 * would be at most 10 s late: inside the liveness limit (two intervals plus
 * the 10 s deadline) at any interval.
 */
export const HEARTBEAT_TICK_MS = 10_000;

/** Heartbeat outcomes `/status` keeps (`heartbeat.recentOutcomes`). */
export const HEARTBEATS_KEPT = 10;
