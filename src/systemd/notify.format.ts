import { formatDuration } from '../clock/duration';
import type { CpFailureKind } from '../comms/cp-failure';
import type { HealthCheck } from '../health/health.service';
import { ROLLOUT_STATES, type RolloutState } from '../protocol/rollout';

/** One assignment of an sd_notify(3) datagram. */
export type NotifyField = { kind: 'ready' } | { kind: 'watchdog' } | { kind: 'stopping' } | { kind: 'status'; text: string };

/** systemd keeps STATUS= for `systemctl status`; a long error detail should not fill the screen. */
export const STATUS_MAX_CHARS = 200;

/** The datagram: one `KEY=value` per line, as sd_notify(3) sends it. */
export function notifyDatagram(fields: readonly NotifyField[]): string {
  return fields.map(fieldLine).join('\n');
}

function fieldLine(field: NotifyField): string {
  switch (field.kind) {
    case 'ready':
      return 'READY=1';
    case 'watchdog':
      return 'WATCHDOG=1';
    case 'stopping':
      return 'STOPPING=1';
    case 'status':
      return `STATUS=${oneLine(field.text)}`;
    default: {
      const never: never = field;
      return never;
    }
  }
}

/** A newline inside the value would end STATUS= and start a bogus assignment. */
function oneLine(text: string): string {
  const flat = text.replace(/[\r\n\t]+/g, ' ').trim();
  return flat.length <= STATUS_MAX_CHARS ? flat : `${flat.slice(0, STATUS_MAX_CHARS - 1)}…`;
}

/** Where NOTIFY_SOCKET points, read as sd_notify(3) reads it. */
export type NotifyTarget =
  | { kind: 'path'; address: string }
  /** `@name` is Linux's abstract namespace: the address starts with a NUL byte. */
  | { kind: 'abstract'; address: string }
  | { kind: 'unsupported'; reason: string };

/** sockaddr_un's sun_path holds 108 bytes; unix-dgram copies at most 107 and would cut a longer path silently. */
export const SUN_PATH_MAX_BYTES = 107;

export function notifyTarget(raw: string): NotifyTarget {
  if (raw.startsWith('/')) {
    if (Buffer.byteLength(raw) > SUN_PATH_MAX_BYTES) {
      return { kind: 'unsupported', reason: `the path is longer than the ${SUN_PATH_MAX_BYTES} bytes a unix socket address holds` };
    }
    return { kind: 'path', address: raw };
  }
  if (raw.startsWith('@') && raw.length > 1) return { kind: 'abstract', address: `\0${raw.slice(1)}` };
  if (raw.startsWith('vsock:')) return { kind: 'unsupported', reason: 'AF_VSOCK notify sockets are not supported, only unix ones' };
  return { kind: 'unsupported', reason: 'it must be an absolute path or an @abstract name' };
}

/** What the STATUS= line summarises; read from the agent's services by AgentSummary. */
export type AgentSnapshot =
  | { phase: 'booting'; waitedSecs: number; pendingEvents: number }
  | {
      phase: 'running';
      controlPlane: ControlPlaneView;
      /** Set while event-log writes fail: new events cannot be made durable. */
      eventLogFailing: EventLogFailingView | null;
      pendingEvents: number;
      /** States of the rollouts that are not over yet. */
      activeRollouts: readonly RolloutState[];
      /** Failing liveness checks: while any fails, no WATCHDOG=1 goes out. */
      notLive: readonly Pick<HealthCheck, 'name' | 'detail'>[];
    }
  | { phase: 'stopping' };

export interface EventLogFailingView {
  forSecs: number;
  /** Short: the errno code, e.g. ENOSPC. */
  cause: string | null;
}

export type ControlPlaneView =
  | { kind: 'ok'; lastSuccessSecsAgo: number; failuresSince: number; cause: string | null }
  | { kind: 'unreachable'; forSecs: number; cause: string | null };

/** One line for `systemctl status`: the first thing an operator on the host sees. */
export function statusLine(s: AgentSnapshot): string {
  switch (s.phase) {
    case 'booting':
      return `boot recovery: waiting for the handshake with the control plane (${formatDuration(s.waitedSecs)}); ${eventsPending(s.pendingEvents)}`;
    case 'running': {
      const parts: string[] = [];
      if (s.notLive.length > 0) {
        parts.push(`NOT LIVE, watchdog pings withheld: ${s.notLive.map((c) => `${c.name}: ${c.detail}`).join(', ')}`);
      }
      // First after liveness: it is what the line would otherwise hide behind "heartbeat ok".
      if (s.eventLogFailing !== null) {
        const cause = s.eventLogFailing.cause === null ? '' : ` (${s.eventLogFailing.cause})`;
        parts.push(`DEGRADED: event log writes failing for ${formatDuration(s.eventLogFailing.forSecs)}${cause}`);
      }
      parts.push(controlPlanePart(s.controlPlane), eventsPending(s.pendingEvents));
      const rollouts = rolloutsPart(s.activeRollouts);
      if (rollouts !== null) parts.push(rollouts);
      return parts.join('; ');
    }
    case 'stopping':
      return 'stopping: finishing in-flight work';
    default: {
      const never: never = s;
      return never;
    }
  }
}

function controlPlanePart(cp: ControlPlaneView): string {
  switch (cp.kind) {
    case 'ok': {
      const base = `heartbeat ok ${formatDuration(cp.lastSuccessSecsAgo)} ago`;
      if (cp.failuresSince === 0) return base;
      const failures = `${cp.failuresSince} failed attempt${cp.failuresSince === 1 ? '' : 's'} since`;
      return `${base} (${failures}${cp.cause === null ? '' : `: ${cp.cause}`})`;
    }
    case 'unreachable':
      return `control plane unreachable for ${formatDuration(cp.forSecs)}${cp.cause === null ? '' : ` (${cp.cause})`}`;
    default: {
      const never: never = cp;
      return never;
    }
  }
}

function eventsPending(n: number): string {
  if (n === 0) return 'no events pending';
  return `${n} event${n === 1 ? '' : 's'} pending`;
}

/** "1 rollout Soaking", "2 rollouts: 1 Activating, 1 Soaking"; null when there is none. */
function rolloutsPart(states: readonly RolloutState[]): string | null {
  if (states.length === 0) return null;
  const counts = ROLLOUT_STATES.map((state) => ({ state, n: states.filter((s) => s === state).length })).filter((c) => c.n > 0);
  const noun = `rollout${states.length === 1 ? '' : 's'}`;
  if (counts.length === 1) return `${states.length} ${noun} ${counts[0]?.state ?? ''}`;
  return `${states.length} ${noun}: ${counts.map((c) => `${c.n} ${c.state}`).join(', ')}`;
}

/** The short cause of a failed heartbeat, for the STATUS= line; the full text is in the log and /status. */
export function failureCause(kind: CpFailureKind, message: string): string {
  switch (kind) {
    case 'http-status':
      return /^HTTP \d{3}/.exec(message)?.[0] ?? 'HTTP error';
    case 'connect':
      return 'cannot connect';
    case 'tls':
      return 'TLS handshake failed';
    case 'timeout':
      return 'timed out';
    case 'network':
      return 'connection dropped';
    case 'aborted':
      return 'aborted';
    case 'bad-body':
      return 'bad response';
    default: {
      const never: never = kind;
      return never;
    }
  }
}

/** sd_watchdog_enabled(3): ping at half the timeout, so one late ping is not yet a miss. */
export function watchdogPeriodMs(watchdogUsec: number): number {
  return Math.max(1, Math.floor(watchdogUsec / 2000));
}
