import { describeEnd } from '../../activation/backends/process-runner';
import type { ProbeOutcome, SystemdFailedUnitsSpec } from '../probe.types';
import { cancelled, failed, oneLine, passed } from './outcome';
import { runUntilAbort } from './run-until-abort';

/** One line per failed unit, its name first, nothing else: no header, footer, bullets or pager. */
export const LIST_FAILED_UNITS_ARGS: readonly string[] = ['list-units', '--failed', '--plain', '--no-legend', '--no-pager'];

/** How many failed units a reason names before "and N more". */
const UNITS_NAMED = 5;

/** A host with this much output has more failed units than any `max` is meant for; the rest is not read. */
const OUTPUT_MAX_BYTES = 1024 * 1024;

export interface SystemdFailedUnitsDeps {
  /** The systemctl to run; `systemctl` from the agent's PATH when absent (tests point it at a fake). */
  readonly systemctl?: string;
  readonly killGraceMs?: number;
}

/**
 * The manifest's `healthGate.systemdFailedUnits` (§10): pass while the
 * number of failed units is at most `max`. A systemctl that cannot run or
 * fails is a failure too: a gate that cannot look must not pass. Never
 * rejects.
 */
export async function runSystemdFailedUnitsProbe(
  spec: SystemdFailedUnitsSpec,
  signal: AbortSignal,
  deps: SystemdFailedUnitsDeps = {},
): Promise<ProbeOutcome> {
  const started = performance.now();
  const systemctl = deps.systemctl ?? 'systemctl';
  const result = await runUntilAbort([systemctl, ...LIST_FAILED_UNITS_ARGS], {
    timeoutMs: spec.timeoutMs,
    killGraceMs: deps.killGraceMs,
    signal,
    stdoutMaxBytes: OUTPUT_MAX_BYTES,
  });
  if (result === null) return cancelled(started);
  if (result.exitCode !== 0 || result.timedOut) {
    const head = describeEnd(`${systemctl} list-units --failed`, result, spec.timeoutMs);
    return failed(started, result.stderrTail === '' ? head : `${head}: ${oneLine(result.stderrTail)}`);
  }
  const units = result.stdout
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .map((line) => line.split(/\s+/)[0] ?? line);
  if (units.length <= spec.max) return passed(started);
  const named = units.slice(0, UNITS_NAMED).join(', ');
  const more = units.length > UNITS_NAMED ? ` and ${units.length - UNITS_NAMED} more` : '';
  const count = `${units.length} failed unit${units.length === 1 ? '' : 's'}`;
  return failed(started, `${count}, at most ${spec.max} allowed: ${named}${more}`);
}
