import { describeEnd } from '../../activation/backends/process-runner';
import { keepEnd, reasonLength } from '../failure-reason';
import { EXEC_STDERR_LINES, MAX_FAILURE_REASON_CHARS, type ExecProbeSpec, type ProbeOutcome } from '../probe.types';
import { cancelled, failed, passed } from './outcome';
import { runUntilAbort } from './run-until-abort';

/**
 * The whole environment of an exec probe. The agent's own environment holds
 * its settings, and a probe that passes only because it inherited them (a
 * proxy, a credentials path, a PATH from the agent's unit) would pass for the
 * wrong reason and break when the agent's unit changes. The command's
 * program is an absolute path (the file parser insists); this PATH is for
 * what it runs in turn, the system profile first.
 */
export const EXEC_PROBE_ENV: Readonly<Record<string, string>> = Object.freeze({ PATH: '/run/current-system/sw/bin:/usr/bin:/bin' });

export interface ExecProbeDeps {
  /** After SIGTERM at the timeout, how long before SIGKILL; the activation default when absent. */
  readonly killGraceMs?: number;
}

/**
 * §10 `exec`: run argv (no shell) with a clean environment; pass on exit 0.
 * At the timeout the process group gets SIGTERM, then SIGKILL after a grace.
 * A failure says how the run ended, then the last 3 non-empty stderr lines.
 * Never rejects.
 */
export async function runExecProbe(spec: ExecProbeSpec, signal: AbortSignal, deps: ExecProbeDeps = {}): Promise<ProbeOutcome> {
  const started = performance.now();
  if (signal.aborted) return cancelled(started);
  const result = await runUntilAbort(spec.command, {
    timeoutMs: spec.timeoutMs,
    killGraceMs: deps.killGraceMs,
    env: EXEC_PROBE_ENV,
    signal,
  });
  if (result === null) return cancelled(started);
  if (result.exitCode === 0 && !result.timedOut) return passed(started);
  const head = describeEnd(spec.command[0] ?? 'the command', result, spec.timeoutMs);
  const lines = result.stderrTail
    .split('\n')
    .map((line) => line.trimEnd())
    .filter((line) => line.trim() !== '')
    .slice(-EXEC_STDERR_LINES);
  if (lines.length === 0) return failed(started, head);
  // The last stderr words explain the failure: when it is too long, the reason loses the start of the tail, not its end.
  const budget = MAX_FAILURE_REASON_CHARS - reasonLength(head) - 1;
  return failed(started, budget > 0 ? `${head}\n${keepEnd(lines.join('\n'), budget)}` : head);
}
