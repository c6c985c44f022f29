/** Every metric of the agent's own starts with this; the process metrics keep their standard names. */
export const METRIC_PREFIX = 'nixfleet_agent_';

/** Heartbeat latency buckets (seconds), up to the 10 s heartbeat deadline. */
export const HEARTBEAT_LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Probe duration buckets (seconds): a local check answers in milliseconds; the default probe timeout is 10 s. */
export const PROBE_DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30];

/**
 * How often the one event-loop delay monitor (LoopDelaySampler) fires: every
 * firing wakes an idle agent, and both of its readers judge seconds (a 5 s
 * stall for liveness, lag percentiles between scrapes), not milliseconds.
 */
export const LOOP_DELAY_RESOLUTION_MS = 1_000;
