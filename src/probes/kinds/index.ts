import { capFailureReason } from '../failure-reason';
import type { ProbeOutcome, ProbeSpec } from '../probe.types';
import { runExecProbe } from './exec.probe';
import { runHttpProbe, type HttpProbeDeps } from './http.probe';
import { errorMessage, failed } from './outcome';
import { runSystemdFailedUnitsProbe } from './systemd-failed-units.probe';
import { runTcpProbe } from './tcp.probe';

/** What the probe kinds need from the outside; only the http kind needs anything at all. */
export interface ProbeKindDeps extends HttpProbeDeps {
  /** After SIGTERM at an exec or systemctl timeout, how long before SIGKILL; the activation default when absent. */
  readonly killGraceMs?: number;
  /** The systemctl the `systemd-failed-units` probe runs; `systemctl` from PATH when absent. */
  readonly systemctl?: string;
}

/**
 * One run of one probe. Never rejects: any error is a `fail` with a reason
 * of at most MAX_FAILURE_REASON_CHARS characters. When `signal` aborts (the
 * runner was reset or stopped) it resolves promptly with a `cancelled`
 * failure the runner discards.
 */
export async function runProbeCheck(spec: ProbeSpec, signal: AbortSignal, deps: ProbeKindDeps): Promise<ProbeOutcome> {
  const started = performance.now();
  try {
    return await runKind(spec, signal, deps);
  } catch (err) {
    // Each kind already turns its errors into a failure; this is the net under a bug in one.
    return failed(started, `the ${spec.kind} probe failed unexpectedly: ${errorMessage(err)}`);
  }
}

function runKind(spec: ProbeSpec, signal: AbortSignal, deps: ProbeKindDeps): Promise<ProbeOutcome> {
  switch (spec.kind) {
    case 'http':
      return runHttpProbe(spec, signal, deps);
    case 'tcp':
      return runTcpProbe(spec, signal);
    case 'exec':
      return runExecProbe(spec, signal, deps);
    case 'systemd-failed-units':
      return runSystemdFailedUnitsProbe(spec, signal, deps);
    case 'invalid':
      // A declaration the agent could not accept fails every run: a typo must never make a rollout pass.
      return Promise.resolve({ status: 'fail', failureReason: capFailureReason(spec.problem), durationMs: 0 });
    default: {
      const never: never = spec;
      return never;
    }
  }
}
