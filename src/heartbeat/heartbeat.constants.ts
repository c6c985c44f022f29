/** Name of the job in the SchedulerRegistry. */
export const HEARTBEAT_INTERVAL_NAME = 'heartbeat';
