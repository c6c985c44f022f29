/** Name of the job: its decorated tick in the SchedulerRegistry, and its entry in the job runtime. */
export const HEARTBEAT_INTERVAL_NAME = 'heartbeat';
/**
 * The decorated tick. It only asks whether a beat is due, so it is fixed
 * when the class is defined while the interval comes from config; 250 ms
 * keeps a beat within a quarter second of its jittered due time.
 */
export const HEARTBEAT_TICK_MS = 250;
