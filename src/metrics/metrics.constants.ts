/** Every metric of the agent's own starts with this; the process metrics keep their standard names. */
export const METRIC_PREFIX = 'nixfleet_agent_';

/** Heartbeat latency buckets (seconds), up to the 10 s heartbeat deadline. */
export const HEARTBEAT_LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
