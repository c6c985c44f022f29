/** Spread of every backoff step (±20 %), so hosts that failed together do not retry together. */
export const BACKOFF_JITTER = 0.2;
/** The longest Retry-After a job honours; longer asks are cut to this. */
export const RETRY_AFTER_CAP_MS = 10 * 60_000;
/** What shutdown gives a run in flight to finish, unless its job says otherwise. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 5_000;
/** After a run is cut (its signal aborted), how long shutdown waits for it to notice before going on without it. */
export const ABORT_SETTLE_MS = 2_000;
/** setTimeout takes at most a signed 32-bit delay; a longer wait is re-armed when it fires. */
export const MAX_TIMER_MS = 2_147_483_647;
/**
 * A timer may fire a little before the clock's due time: libuv counts in
 * whole milliseconds from a loop time cached at the start of the loop's
 * turn. A run that close to due is on time; re-arming for the rest would
 * cost a second wake-up for nothing.
 */
export const TIMER_SLACK_MS = 5;
