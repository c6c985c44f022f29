/** Names of the jobs in the job runtime (and of their timeouts in the SchedulerRegistry). */
export const WATCHDOG_INTERVAL_NAME = 'systemd-watchdog';
export const STATUS_INTERVAL_NAME = 'systemd-status';

/** How often the STATUS= line is recomputed; it is sent only when its text changed. */
export const STATUS_REFRESH_MS = 5_000;
