import net from 'node:net';
import { formatMs } from '../../activation/backends/process-runner';
import type { ProbeOutcome, TcpProbeSpec } from '../probe.types';
import { cancelled, connectionProblem, errorCode, failed, passed } from './outcome';

/**
 * §10 `tcp`: pass when a connect to host:port succeeds within the connect
 * timeout (a name lookup counts in it). The socket is closed at once: no
 * byte is sent. Never rejects.
 */
export interface TcpProbeDeps {
  /** The name lookup; the system resolver when absent (tests use one that never answers). */
  readonly lookup?: net.LookupFunction;
}

export function runTcpProbe(spec: TcpProbeSpec, signal: AbortSignal, deps: TcpProbeDeps = {}): Promise<ProbeOutcome> {
  const started = performance.now();
  if (signal.aborted) return Promise.resolve(cancelled(started));
  const what = `connect to ${net.isIPv6(spec.host) ? `[${spec.host}]` : spec.host}:${spec.port}`;
  return new Promise<ProbeOutcome>((resolve) => {
    let settled = false;
    const socket = new net.Socket();
    const settle = (outcome: ProbeOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve(outcome);
    };
    const onAbort = (): void => settle(cancelled(started));
    const timer = setTimeout(() => {
      // not a job: this connect's deadline
      settle(failed(started, `${what} timed out after ${formatMs(spec.connectTimeoutMs)}`));
    }, spec.connectTimeoutMs);
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => settle(passed(started)));
    socket.on('error', (err) => {
      const refused = errorCode(err) === 'ECONNREFUSED';
      settle(failed(started, refused ? `${what} refused (ECONNREFUSED)` : `${what} ${connectionProblem(err)}`));
    });
    try {
      socket.connect({ host: spec.host, port: spec.port, ...(deps.lookup === undefined ? {} : { lookup: deps.lookup }) });
    } catch (err) {
      // A port out of range throws at once rather than emitting 'error'.
      settle(failed(started, `${what} ${connectionProblem(err)}`));
    }
  });
}
