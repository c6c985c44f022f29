/** Every metric of the agent's own starts with this; the process metrics keep their standard names. */
export const METRIC_PREFIX = 'nixfleet_agent_';

/** Heartbeat latency buckets (seconds), up to the 10 s heartbeat deadline. */
export const HEARTBEAT_LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Probe duration buckets (seconds): a local check answers in milliseconds; the default probe timeout is 10 s. */
export const PROBE_DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30];

/**
 * How often the process metrics' event-loop lag monitor samples. prom-client's
 * default, 10 ms, wakes an idle agent 100 times a second; at 500 ms the lag
 * percentiles are coarser, and a stall still shows in full (the monitor
 * records how late its own timer fired).
 */
export const EVENT_LOOP_LAG_SAMPLE_MS = 500;
