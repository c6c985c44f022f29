/** `status --watch [--interval SECS]`: the status command redraws every `intervalSecs` until Ctrl-C or SIGTERM. */
export interface StatusWatch {
  readonly intervalSecs: number;
}

export const DEFAULT_WATCH_INTERVAL_SECS = 2;
/** Below this the agent's admin endpoint would be polled for nothing a person can read. */
export const MIN_WATCH_INTERVAL_SECS = 0.1;
/** An hour: beyond it a watch is not watching (and Node's timers overflow past 24.8 days). */
export const MAX_WATCH_INTERVAL_SECS = 3600;

const SECONDS = /^\d+(\.\d+)?$/;

/**
 * `--watch` and `--interval` of the status command (the loader refuses them
 * with any other command), from the parsed flags; a problem (one line each)
 * is pushed to `problems` and nothing returned. Undefined when not watching.
 */
export function statusWatchOf(values: Readonly<Record<string, string | boolean | undefined>>, problems: string[]): StatusWatch | undefined {
  const interval = values.interval;
  if (values.watch !== true) {
    if (interval !== undefined) problems.push('config error: --interval only applies to status --watch (how often it refreshes)');
    return undefined;
  }
  if (interval === undefined) return { intervalSecs: DEFAULT_WATCH_INTERVAL_SECS };
  const secs = typeof interval === 'string' && SECONDS.test(interval) ? Number(interval) : Number.NaN;
  if (!(secs >= MIN_WATCH_INTERVAL_SECS && secs <= MAX_WATCH_INTERVAL_SECS)) {
    problems.push(
      `config error: --interval must be a number of seconds from ${MIN_WATCH_INTERVAL_SECS} to ${MAX_WATCH_INTERVAL_SECS}, got ${JSON.stringify(interval)}`,
    );
    return undefined;
  }
  return { intervalSecs: secs };
}
