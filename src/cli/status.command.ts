import { setTimeout as sleep } from 'node:timers/promises';
import { formatDuration } from '../clock/duration';
import { CERT_EXPIRY_WARNING_DAYS, CLOCK_SKEW_WARN_SECS } from '../clock/thresholds';
import { formatListenAddress, type ListenAddress } from '../config/listen-address';
import {
  COMPONENT_LABELS,
  COMPONENT_NAMES,
  type ComponentHealth,
  type ComponentName,
  type ComponentState,
} from '../health/component-health';
import { type AdminAnswer, AdminNotJsonError, getFromAdmin } from './admin-request';

/** Exit statuses of `nixfleet-agent status`; the one place they are defined. */
export const STATUS_EXIT = { healthy: 0, degraded: 1, unreachable: 3 } as const;
export type StatusExit = (typeof STATUS_EXIT)[keyof typeof STATUS_EXIT];

/** Without /readyz, the CP's own rule: unreachable after three missed heartbeats. */
const MISSED_HEARTBEATS = 3;
const DAY_SECS = 86_400;

type Json = Record<string, unknown>;

/**
 * What `/readyz` said about the control plane. A 503 that says the CP is
 * reachable (the event log failed) is `ready` here: /status's components
 * carry the rest. The document may come from an older or newer agent: every
 * field may be missing.
 */
export type Readyz =
  | { kind: 'ready'; lastSuccessAt: string | null }
  | {
      kind: 'unreachable';
      lastError: string | null;
      failingForSecs: number | null;
      lastSuccessAt: string | null;
      consecutiveFailures: number | null;
    }
  /** 404: an agent without /readyz; readiness is judged from /status's heartbeat instead. */
  | { kind: 'absent' }
  /** Could not ask, or the answer made no sense; judged from /status too, with a warning. */
  | { kind: 'unknown'; why: string };

export type Reachability =
  | {
      kind: 'reachable';
      lastHeartbeatAgeSecs: number | null;
      /** Set when the last attempt failed though the CP still counts as reachable (within 3 intervals). */
      lastAttemptFailed?: LastAttemptFailed;
    }
  | { kind: 'unreachable'; forSecs: number | null; lastError: string | null; consecutiveFailures: number | null }
  | { kind: 'unknown'; why: string };

export interface LastAttemptFailed {
  error: string | null;
  /** First failure of the current streak. */
  failingSince: string | null;
  consecutiveFailures: number;
}

/**
 * Components that `assess` judges from /status's `components` (an older
 * agent has none). Heartbeat, delivery and identity keep their own checks
 * below, which also work on an older agent's document. The activation
 * backend is not here: a missing tool is only ever a warning (the agent's own
 * work goes on; a dispatch that needs it fails and says so).
 */
export const JUDGED_BY_COMPONENT: readonly ComponentName[] = ['eventLog', 'dispatchPoll'];

/** What makes the agent degraded (exit 1). */
export type Problem =
  | { kind: 'cp-unreachable'; forSecs: number | null }
  | { kind: 'component-failing'; component: ComponentName; detail: string; since: string | null }
  | { kind: 'delivery-paused'; reason: string }
  | { kind: 'certificate-expiring'; secondsLeft: number };

/** Worth an operator's attention, but not degraded by themselves. */
export type Warning =
  | { kind: 'readiness-unknown'; why: string }
  | { kind: 'events-refused'; count: number }
  | { kind: 'replay-missing'; rolloutId: string | null; seqs: number[] }
  | { kind: 'activation-failed'; rolloutId: string | null; activation: string; exitCode: number | null; detail: string | null }
  | { kind: 'clock-skew'; secs: number }
  | { kind: 'certificate-not-yet-valid'; notBefore: string | null }
  | { kind: 'certificate-reload-failed'; error: string }
  /** --allow-unsigned without a trust file: said in every status. */
  | { kind: 'dispatches-unverified'; warning: string }
  /** The last dispatch judged was refused (PROTOCOL §12): not acknowledged, nothing switched. */
  | { kind: 'dispatch-refused'; rolloutId: string; reason: string; detail: string; during: string }
  /** A judged rollout that failed: halted, rolled back, or its rollback failed (the host then needs an operator). */
  | {
      kind: 'rollout-failed';
      rolloutId: string;
      state: string;
      policy: string | null;
      rollbackTo: string | null;
      rollbackExitCode: number | null;
    };

export interface Assessment {
  exit: StatusExit;
  reachability: Reachability;
  problems: Problem[];
  warnings: Warning[];
  /** /status's per-component health; null from an agent that does not report it. */
  components: Partial<Record<ComponentName, ComponentHealth>> | null;
}

export interface StatusCommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

/**
 * Asks the running agent for /status and /readyz, prints a summary for a
 * person (or the raw /status with --json), and exits 0 healthy, 1 degraded,
 * 3 when no agent answers. The exit status is the same with --json, for scripts.
 */
export async function runStatusCommand(
  address: ListenAddress,
  json: boolean,
  io: StatusCommandIo,
  now: () => Date = () => new Date(),
): Promise<StatusExit> {
  const got = await fetchStatus(address, now);
  if (got.kind === 'no-answer') {
    io.err(got.line);
    return STATUS_EXIT.unreachable;
  }
  io.out(json ? JSON.stringify(got.status, null, 2) : summarize(got.status, got.assessment, got.at));
  return got.assessment.exit;
}

/** One look at the agent: its documents judged, or the one line that says why there was no usable answer. */
type Fetched = { kind: 'answer'; status: Json; assessment: Assessment; at: Date } | { kind: 'no-answer'; line: string };

async function fetchStatus(address: ListenAddress, now: () => Date, signal?: AbortSignal): Promise<Fetched> {
  const where = formatListenAddress(address);
  const [statusAnswer, readyAnswer] = await Promise.allSettled([
    getFromAdmin(address, '/status', undefined, signal),
    getFromAdmin(address, '/readyz', undefined, signal),
  ]);
  if (statusAnswer.status === 'rejected') {
    const line =
      statusAnswer.reason instanceof AdminNotJsonError
        ? notAnAgent(where, statusAnswer.reason.status)
        : noAgent(where, statusAnswer.reason);
    return { kind: 'no-answer', line };
  }
  const status = record(statusAnswer.value.body);
  if (statusAnswer.value.status !== 200 || status === null)
    return { kind: 'no-answer', line: notAnAgent(where, statusAnswer.value.status) };
  const readyz: Readyz =
    readyAnswer.status === 'fulfilled' ? readyzOf(readyAnswer.value) : { kind: 'unknown', why: errorText(readyAnswer.reason) };
  const at = now();
  return { kind: 'answer', status, assessment: assess(status, readyz, at), at };
}

export interface WatchIo {
  /** Written as is: a frame carries its own line ends and, on a terminal, its escape codes. */
  write: (text: string) => void;
  err: (text: string) => void;
  /** stdout is a terminal: redraw in place; anything else gets plain blocks. */
  tty: boolean;
  /** The terminal's size, asked again for each frame so that a resized terminal gets fitted frames from the next refresh. */
  size?: () => TerminalSize;
}

/** A terminal's size in character cells; a field is missing (or not a positive integer) when it is not known. */
export interface TerminalSize {
  rows?: number;
  columns?: number;
}

/** ECMA-48: cursor to the top left (CUP), erase to the end of the line (EL), erase below the cursor (ED). */
export const TTY_HOME = '\x1b[H';
export const TTY_ERASE_LINE = '\x1b[K';
export const TTY_ERASE_BELOW = '\x1b[J';

/**
 * One refresh as written. On a terminal it overwrites the previous one in
 * place, line by line, and erases what is left below (no full clear, so no
 * flicker), fitted to the terminal's size when it is known (fitToTerminal);
 * elsewhere it is a plain block, a blank line before each but the first,
 * with no escape codes and nothing cut.
 */
export function watchFrame(block: string, tty: boolean, first: boolean, size: TerminalSize = {}): string {
  if (!tty) return `${first ? '' : '\n'}${block}\n`;
  const lines = fitToTerminal(block.split('\n'), size).map((line) => `${line}${TTY_ERASE_LINE}`);
  return `${TTY_HOME}${lines.join('\n')}\n${TTY_ERASE_BELOW}`;
}

/**
 * A frame's lines cut to the terminal, as watch(1) does: a frame taller than
 * the screen would scroll at each refresh and push its top (the verdict) out
 * of sight, and a line wider than the screen would wrap and do the same.
 * The frame never reaches the bottom row (the newline ending it would scroll
 * the screen by one; the cursor waits there) nor the last column (a line
 * filling it leaves the cursor pending a wrap, where erasing to the end of
 * the line erases its last character on xterm-like terminals). Lines that do
 * not fit are counted on the last row; a cut line ends in '…'. Widths are
 * counted in code points: the summary is ASCII but for what the agent
 * reports, and a wide character there only costs a wrap. An unknown size
 * (not a positive integer) cuts nothing in that direction.
 */
export function fitToTerminal(lines: readonly string[], size: TerminalSize): string[] {
  const rows = cells(size.rows);
  const columns = cells(size.columns);
  let fitted = [...lines];
  if (rows !== null) {
    const room = Math.max(1, rows - 1);
    if (fitted.length > room) {
      const kept = room - 1;
      fitted = [...fitted.slice(0, kept), cutNote(fitted.length - kept)];
    }
  }
  if (columns === null) return fitted;
  const width = Math.max(1, columns - 1);
  return fitted.map((line) => clip(line, width));
}

function cells(n: number | undefined): number | null {
  return n !== undefined && Number.isInteger(n) && n > 0 ? n : null;
}

function cutNote(cut: number): string {
  return `… ${cut} more line${cut === 1 ? '' : 's'}: enlarge the terminal or use status without --watch`;
}

function clip(line: string, width: number): string {
  const chars = Array.from(line);
  return chars.length <= width ? line : `${chars.slice(0, width - 1).join('')}…`;
}

/** The first line of each refresh: how often, and when this one was taken. */
export function watchHeader(intervalSecs: number, at: Date, tty: boolean): string {
  return `every ${intervalSecs} s: nixfleet-agent status at ${at.toISOString()}${tty ? ' (Ctrl-C to stop)' : ''}`;
}

/**
 * `status --watch`: the summary again every `intervalSecs` until `stop`
 * (SIGINT or SIGTERM by default), then exit 0. On a terminal each frame is
 * fitted to `io.size()` as it is at that refresh. An agent that does not
 * answer is said in the refresh, and the watch goes on. With --json, one
 * compact /status document per line (JSON Lines), never escape codes, and
 * a missing answer goes to stderr.
 */
export async function watchStatus(
  address: ListenAddress,
  json: boolean,
  intervalSecs: number,
  io: WatchIo,
  stop: AbortSignal = stopOnSignals(),
  now: () => Date = () => new Date(),
): Promise<0> {
  for (let first = true; !stop.aborted; first = false) {
    const got = await fetchStatus(address, now, stop);
    // A refresh cut short by the stop is not one the operator asked for.
    if (stop.aborted) break;
    if (json) {
      if (got.kind === 'answer') io.write(`${JSON.stringify(got.status)}\n`);
      else io.err(got.line);
    } else {
      const at = got.kind === 'answer' ? got.at : now();
      const body = got.kind === 'answer' ? summarize(got.status, got.assessment, got.at) : got.line;
      io.write(watchFrame(`${watchHeader(intervalSecs, at, io.tty)}\n${body}`, io.tty, first, io.size?.()));
    }
    try {
      await sleep(intervalSecs * 1000, undefined, { signal: stop });
    } catch {
      // Stopped while waiting: the loop ends.
    }
  }
  return 0;
}

/** Aborted by SIGINT (Ctrl-C) or SIGTERM: a watch stopped on purpose exits 0. Each is caught once: a second Ctrl-C acts as by default. */
function stopOnSignals(): AbortSignal {
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return controller.signal;
}

function noAgent(where: string, err: unknown): string {
  return `nixfleet-agent status: no agent answers at ${where} (${errorText(err)}); is it running? If its admin endpoint is elsewhere, give that address with --admin-listen HOST:PORT or unix:/path`;
}

function notAnAgent(where: string, httpStatus: number): string {
  return `nixfleet-agent status: ${where} answered HTTP ${httpStatus} to /status, not with an agent's status document; is --admin-listen the address of the agent's admin endpoint?`;
}

/** Reads a /readyz answer; anything but 200, 503 or 404 is "unknown". */
export function readyzOf(answer: AdminAnswer): Readyz {
  const body = record(answer.body);
  switch (answer.status) {
    case 200:
      return { kind: 'ready', lastSuccessAt: text(body?.lastSuccessAt) };
    case 503:
      // A newer agent says whether the CP is what made it unready.
      if (body?.reachable === true) return { kind: 'ready', lastSuccessAt: text(body.lastSuccessAt) };
      return {
        kind: 'unreachable',
        lastError: errorMessage(body?.lastError),
        failingForSecs: count(body?.failingForSecs),
        lastSuccessAt: text(body?.lastSuccessAt),
        consecutiveFailures: count(body?.consecutiveFailures),
      };
    case 404:
      return { kind: 'absent' };
    default:
      return { kind: 'unknown', why: `/readyz answered HTTP ${answer.status}` };
  }
}

/**
 * The verdict, from the two documents and the time: degraded when the
 * control plane is unreachable (as /readyz judges it), event delivery is
 * paused, the client certificate has less than CERT_EXPIRY_WARNING_DAYS
 * left, or a component of JUDGED_BY_COMPONENT is failing. --help says the
 * same (config.loader.ts).
 */
export function assess(status: Json, readyz: Readyz, now: Date): Assessment {
  const problems: Problem[] = [];
  const warnings: Warning[] = [];

  const reachability = reachabilityOf(status, readyz, now);
  switch (reachability.kind) {
    case 'reachable':
      break;
    case 'unreachable':
      problems.push({ kind: 'cp-unreachable', forSecs: reachability.forSecs });
      break;
    case 'unknown':
      warnings.push({ kind: 'readiness-unknown', why: reachability.why });
      break;
    default: {
      const never: never = reachability;
      return never;
    }
  }
  if (readyz.kind === 'unknown' && reachability.kind !== 'unknown') {
    warnings.push({ kind: 'readiness-unknown', why: `${readyz.why}; judged from the last heartbeat instead` });
  }

  const components = componentsOf(status);
  for (const name of JUDGED_BY_COMPONENT) {
    const c = components?.[name];
    if (c?.state === 'failing') problems.push({ kind: 'component-failing', component: name, detail: c.detail, since: c.since });
  }

  const outbound = record(status.outbound);
  const paused = text(outbound?.deliveryPausedReason);
  if (paused !== null && paused !== '') problems.push({ kind: 'delivery-paused', reason: paused });
  const refused = count(outbound?.refused);
  if (refused !== null && refused > 0) warnings.push({ kind: 'events-refused', count: refused });
  const replay = record(outbound?.replay);
  const missing = numbers(replay?.missing);
  if (missing.length > 0) warnings.push({ kind: 'replay-missing', rolloutId: text(replay?.rolloutId), seqs: missing });

  const cert = record(status.certificate);
  if (cert !== null) {
    const left = certSecondsLeft(cert, now);
    if (left !== null && left < CERT_EXPIRY_WARNING_DAYS * DAY_SECS) problems.push({ kind: 'certificate-expiring', secondsLeft: left });
    if (cert.validity === 'not-yet-valid') warnings.push({ kind: 'certificate-not-yet-valid', notBefore: text(cert.notBefore) });
    const reloadError = text(cert.lastReloadError);
    if (reloadError !== null && reloadError !== '') warnings.push({ kind: 'certificate-reload-failed', error: reloadError });
  }

  const last = record(record(status.activation)?.lastResult);
  if (last !== null && last.outcome === 'failed') {
    warnings.push({
      kind: 'activation-failed',
      rolloutId: text(last.rolloutId),
      activation: text(last.kind) ?? 'activation',
      exitCode: count(last.exitCode),
      detail: firstLine(text(last.detail)),
    });
  }

  // The agent itself is fine after a failed rollout, so not degraded; but the host is not where the fleet wanted it.
  const judged = record(status.probes)?.rollouts;
  for (const r of Array.isArray(judged) ? judged.map(record) : []) {
    if (r === null || (r.state !== 'Failed' && r.state !== 'Reverted')) continue;
    const rollback = record(r.rollback);
    warnings.push({
      kind: 'rollout-failed',
      rolloutId: text(r.rolloutId) ?? '?',
      state: text(r.state) ?? '?',
      policy: text(r.policyApplied),
      rollbackTo: text(rollback?.toClosure),
      rollbackExitCode: number(rollback?.exitCode),
    });
  }

  const trust = record(status.trust);
  const unverified = text(trust?.warning);
  if (trust?.mode === 'unsigned' && unverified !== null) warnings.push({ kind: 'dispatches-unverified', warning: unverified });
  const refusal = lastRefusal(trust);
  if (refusal !== null) warnings.push(refusal);

  const skew = number(record(status.heartbeat)?.clockSkewSecs);
  if (skew !== null && Math.abs(skew) >= CLOCK_SKEW_WARN_SECS) warnings.push({ kind: 'clock-skew', secs: skew });

  return { exit: problems.length > 0 ? STATUS_EXIT.degraded : STATUS_EXIT.healthy, reachability, problems, warnings, components };
}

/** The trust section's last failure, unless a dispatch has verified since. */
function lastRefusal(trust: Json | null): Extract<Warning, { kind: 'dispatch-refused' }> | null {
  const failure = record(trust?.lastFailure);
  if (failure === null) return null;
  const failedAt = text(failure.at);
  const verifiedAt = text(record(trust?.lastVerified)?.verifiedAt);
  if (failedAt !== null && verifiedAt !== null && Date.parse(verifiedAt) > Date.parse(failedAt)) return null;
  return {
    kind: 'dispatch-refused',
    rolloutId: text(failure.rolloutId) ?? '?',
    reason: text(failure.reason) ?? '?',
    detail: firstLine(text(failure.detail)) ?? '',
    during: text(failure.during) ?? 'dispatch',
  };
}

/** /status's `components`, each checked; an unknown state or a missing detail drops that component. */
function componentsOf(status: Json): Partial<Record<ComponentName, ComponentHealth>> | null {
  const all = record(status.components);
  if (all === null) return null;
  const out: Partial<Record<ComponentName, ComponentHealth>> = {};
  for (const name of COMPONENT_NAMES) {
    const c = record(all[name]);
    const state = text(c?.state);
    const detail = text(c?.detail);
    if (detail === null || !isComponentState(state)) continue;
    out[name] = { state, detail, since: text(c?.since) };
  }
  return out;
}

function isComponentState(v: string | null): v is ComponentState {
  return v === 'ok' || v === 'warning' || v === 'failing';
}

/** The last heartbeat attempt, when it failed: said at once, before the CP counts as unreachable. */
function lastAttemptFailed(status: Json): LastAttemptFailed | null {
  const heartbeat = record(status.heartbeat);
  const failures = count(heartbeat?.consecutiveFailures);
  if (heartbeat === null || failures === null || failures === 0) return null;
  return { error: errorMessage(heartbeat.lastError), failingSince: text(heartbeat.failingSince), consecutiveFailures: failures };
}

function reachable(status: Json, lastHeartbeatAgeSecs: number | null): Reachability {
  const failed = lastAttemptFailed(status);
  return failed === null
    ? { kind: 'reachable', lastHeartbeatAgeSecs }
    : { kind: 'reachable', lastHeartbeatAgeSecs, lastAttemptFailed: failed };
}

function reachabilityOf(status: Json, readyz: Readyz, now: Date): Reachability {
  const heartbeat = record(status.heartbeat);
  const lastSuccessAt = text(heartbeat?.lastSuccessAt);
  switch (readyz.kind) {
    case 'ready':
      return reachable(status, ageSecs(readyz.lastSuccessAt ?? lastSuccessAt, now));
    case 'unreachable':
      return {
        kind: 'unreachable',
        forSecs: readyz.failingForSecs ?? ageSecs(readyz.lastSuccessAt ?? lastSuccessAt ?? text(status.startedAt), now),
        lastError: readyz.lastError ?? errorMessage(heartbeat?.lastError),
        consecutiveFailures: readyz.consecutiveFailures ?? count(heartbeat?.consecutiveFailures),
      };
    case 'absent':
    case 'unknown':
      return reachabilityFromHeartbeat(status, now);
    default: {
      const never: never = readyz;
      return never;
    }
  }
}

/** /readyz's rule applied to /status's heartbeat block: a success within three intervals. */
function reachabilityFromHeartbeat(status: Json, now: Date): Reachability {
  const heartbeat = record(status.heartbeat);
  const intervalSecs = number(heartbeat?.intervalSecs);
  if (heartbeat === null || intervalSecs === null) return { kind: 'unknown', why: 'the agent reports neither /readyz nor its heartbeat' };
  const age = ageSecs(text(heartbeat.lastSuccessAt), now);
  if (age !== null && age <= MISSED_HEARTBEATS * intervalSecs) return reachable(status, age);
  return {
    kind: 'unreachable',
    forSecs: age ?? ageSecs(text(status.startedAt), now),
    lastError: errorMessage(heartbeat.lastError),
    consecutiveFailures: count(heartbeat.consecutiveFailures),
  };
}

/** The agent's own count when it gives one (its clock judged it); else from notAfter, else whole days. */
function certSecondsLeft(cert: Json, now: Date): number | null {
  const seconds = number(cert.secondsToExpiry);
  if (seconds !== null) return seconds;
  const notAfter = text(cert.notAfter);
  const at = notAfter === null ? NaN : Date.parse(notAfter);
  if (!Number.isNaN(at)) return (at - now.getTime()) / 1000;
  // Whole days, rounded down: "6" is less than 7 days, "7" is not.
  const days = number(cert.daysToExpiry);
  return days === null ? null : days * DAY_SECS;
}

/** The summary a person reads; the first line is the verdict. */
export function summarize(status: Json, assessment: Assessment, now: Date): string {
  const lines: string[] = [];
  const machine = text(status.machineId) ?? 'unknown machine';
  const version = text(status.agentVersion);
  const pid = count(status.pid);
  const uptime = number(status.uptimeSecs);
  const about = [
    version === null ? null : `nixfleet-agent ${version}`,
    pid === null ? null : `pid ${pid}`,
    uptime === null ? null : `up ${formatDuration(uptime)}`,
  ].filter((s): s is string => s !== null);
  const verdict = assessment.problems.length === 0 ? 'HEALTHY' : `DEGRADED: ${assessment.problems.map(problemHeadline).join('; ')}`;
  lines.push(`${machine}${about.length > 0 ? ` (${about.join(', ')})` : ''}: ${verdict}`);

  const cpUrl = text(status.controlPlaneUrl);
  lines.push(row('control plane', `${cpUrl === null ? '' : `${cpUrl} is `}${reachabilityText(assessment.reachability, now)}`));
  heartbeatLines(record(status.heartbeat), now).forEach((line, i) => lines.push(row(i === 0 ? 'heartbeats' : '', line)));
  lines.push(row('closure', text(status.currentClosure) ?? 'not known (the current-system link is unreadable)'));

  const rollouts = Array.isArray(status.rollouts) ? status.rollouts.map(record).filter((r): r is Json => r !== null) : [];
  if (rollouts.length === 0) lines.push(row('rollouts', 'none'));
  rollouts.forEach((r, i) => rolloutLines(r, now).forEach((line, j) => lines.push(row(i === 0 && j === 0 ? 'rollouts' : '', line))));
  lines.push(...healthLines(record(status.probes), now));
  const trust = record(status.trust);
  if (trust !== null) lines.push(row('trust', trustText(trust, now)));

  const outbound = record(status.outbound);
  lines.push(row('outbound', outbound === null ? 'not known' : outboundText(outbound)));
  const replay = record(outbound?.replay);
  lines.push(row('replay', replay === null ? 'not known' : replayText(replay)));
  lines.push(row('certificate', certificateText(record(status.certificate), now)));
  if (assessment.components !== null) {
    for (const name of COMPONENT_NAMES) {
      const c = assessment.components[name];
      lines.push(row(COMPONENT_LABELS[name], c === undefined ? 'not known' : componentText(c, now)));
    }
  }

  for (const w of assessment.warnings) lines.push(`warning: ${warningText(w)}`);
  return lines.join('\n');
}

/** Labels in a column as wide as the longest, "control plane". */
function row(label: string, value: string): string {
  return `  ${label.padEnd(13)} ${value}`;
}

function problemHeadline(p: Problem): string {
  switch (p.kind) {
    case 'cp-unreachable':
      return 'control plane unreachable';
    case 'component-failing':
      return `${COMPONENT_LABELS[p.component]} failing`;
    case 'delivery-paused':
      return 'event delivery paused';
    case 'certificate-expiring':
      return p.secondsLeft <= 0 ? 'client certificate expired' : `client certificate expires in ${formatDuration(p.secondsLeft)}`;
    default: {
      const never: never = p;
      return never;
    }
  }
}

function reachabilityText(r: Reachability, now: Date): string {
  switch (r.kind) {
    case 'reachable': {
      const base =
        r.lastHeartbeatAgeSecs === null ? 'reachable' : `reachable, last heartbeat ${formatDuration(r.lastHeartbeatAgeSecs)} ago`;
      return r.lastAttemptFailed === undefined ? base : `${base}; ${lastAttemptText(r.lastAttemptFailed, now)}`;
    }
    case 'unreachable': {
      const since = r.forSecs === null ? '' : ` for ${formatDuration(r.forSecs)}`;
      const failures =
        r.consecutiveFailures === null || r.consecutiveFailures === 0 ? '' : ` (${r.consecutiveFailures} failure(s) in a row)`;
      return `UNREACHABLE${since}: ${r.lastError ?? 'no heartbeat answered yet'}${failures}`;
    }
    case 'unknown':
      return `not known to be reachable: ${r.why}`;
    default: {
      const never: never = r;
      return never;
    }
  }
}

function lastAttemptText(f: LastAttemptFailed, now: Date): string {
  const since = f.failingSince === null ? '' : `, failing since ${sinceText(f.failingSince, now)}`;
  return `the last attempt FAILED: ${f.error ?? 'no detail'} (${f.consecutiveFailures} failure(s) in a row${since})`;
}

/** "2026-11-28T12:10:00.000Z (in 10 min)", or "(40 s ago)" once it has passed. */
function whenText(iso: string, now: Date): string {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return iso;
  const secs = (at - now.getTime()) / 1000;
  return secs > 0 ? `${iso} (in ${formatDuration(secs)})` : sinceText(iso, now);
}

/** "2026-11-28T11:59:20.000Z (40 s ago)". */
function sinceText(iso: string, now: Date): string {
  const age = ageSecs(iso, now);
  return age === null ? iso : `${iso} (${formatDuration(age)} ago)`;
}

function componentText(c: ComponentHealth, now: Date): string {
  const since = c.since === null ? '' : ` since ${sinceText(c.since, now)}`;
  switch (c.state) {
    case 'ok':
      return `ok: ${c.detail}`;
    case 'warning':
      return `WARNING${since}: ${c.detail}`;
    case 'failing':
      return `FAILING${since}: ${c.detail}`;
    default: {
      const never: never = c.state;
      return never;
    }
  }
}

/**
 * A rollout's line: its state and since when, its seqs; then, from an agent
 * that reports them, the soak end, the closure before and after, and its
 * last transitions, oldest first.
 */
function rolloutLines(r: Json, now: Date): string[] {
  const seq = (v: unknown): string => (count(v) === null ? '-' : String(count(v)));
  const since = text(r.since);
  const lines = [
    `${text(r.rolloutId) ?? '?'}  ${text(r.state) ?? '?'}${since === null ? '' : ` since ${sinceText(since, now)}`} (last seq ${seq(r.lastEventSeq)}, delivered through ${seq(r.lastDeliveredSeq)})`,
  ];
  const soakDueAt = text(r.soakDueAt);
  if (soakDueAt !== null) lines.push(`  soak ends ${whenText(soakDueAt, now)}`);
  const before = text(r.closureBefore);
  const after = text(r.closureAfter);
  if (before !== null || after !== null) lines.push(`  closure ${before ?? 'not known'} -> ${after ?? 'not switched yet'}`);
  const transitions = Array.isArray(r.transitions) ? r.transitions.map(record).filter((t): t is Json => t !== null) : [];
  for (const t of transitions) {
    const at = text(t.at);
    lines.push(`  ${at === null ? '?' : sinceText(at, now)}  ${text(t.from) ?? 'new'} -> ${text(t.to) ?? '?'} (${text(t.input) ?? '?'})`);
  }
  return lines;
}

/** The recent heartbeats, oldest first, one line each; none from an agent that does not report them. */
function heartbeatLines(heartbeat: Json | null, now: Date): string[] {
  const recent = heartbeat?.recentOutcomes;
  const outcomes = Array.isArray(recent) ? recent.map(record).filter((o): o is Json => o !== null) : [];
  return outcomes.map((o) => {
    const at = text(o.at);
    const latency = count(o.latencyMs);
    const took = latency === null ? '' : ` in ${latency} ms`;
    const boot = o.source === 'boot-recovery' ? ' (boot recovery)' : '';
    return `${at === null ? '?' : sinceText(at, now)}  ${outcomeText(o)}${took}${boot}`;
  });
}

/** "ok (HTTP 200)", "FAILED: HTTP 503", "FAILED: connect (cannot connect: ECONNREFUSED ...)". */
function outcomeText(o: Json): string {
  const status = count(o.httpStatus);
  if (o.result === 'ok') return status === null ? 'ok' : `ok (HTTP ${status})`;
  if (o.result === 'http-status' && status !== null) return `FAILED: HTTP ${status}`;
  const error = firstLine(text(o.error));
  return `FAILED: ${text(o.result) ?? '?'}${status === null ? '' : ` (HTTP ${status})`}${error === null ? '' : ` (${error})`}`;
}

/** How dispatches are judged, the last one verified and how many were refused; an older agent's document has no `trust`. */
function trustText(trust: Json, now: Date): string {
  if (trust.mode === 'unsigned') return `UNVERIFIED: no trust file at ${text(trust.trustFile) ?? '?'} (--allow-unsigned)`;
  const keys = record(trust.keys);
  const named = [
    text(keys?.current) && `current ${text(keys?.current)}`,
    text(keys?.previous) && `previous ${text(keys?.previous)}`,
  ].filter(Boolean);
  const verified = record(trust.lastVerified);
  const last =
    verified === null
      ? 'no dispatch verified yet'
      : `last verified ${text(verified.rolloutId) ?? '?'}${verified.keySlot === 'previous' ? ' (with the previous key)' : ''} at ${sinceText(text(verified.verifiedAt) ?? '', now)}`;
  const refused = count(trust.refusedTotal);
  return `verifying with ${text(trust.trustFile) ?? '?'} (${named.join(', ')}); ${last}${refused ? `; ${refused} refused since start` : ''}`;
}

/**
 * Each judged rollout (every Soaking one, and the latest): why it has not
 * converged yet, or its verdict, then one line per probe. An older agent's
 * document has no `probes`: nothing is printed.
 */
function healthLines(probes: Json | null, now: Date): string[] {
  if (probes === null) return [];
  const lines: string[] = [];
  const file = record(probes.healthChecksFile);
  if (file !== null) lines.push(row('health checks', healthFileText(file)));
  const rollouts = Array.isArray(probes.rollouts) ? probes.rollouts.map(record).filter((r): r is Json => r !== null) : [];
  for (const r of rollouts) {
    lines.push(row('health', `${text(r.rolloutId) ?? '?'} ${verdictText(r, now)}`));
    const list = Array.isArray(r.probes) ? r.probes.map(record).filter((p): p is Json => p !== null) : [];
    for (const p of list) lines.push(row('', `  probe ${probeText(p, now)}`));
  }
  return lines;
}

function healthFileText(f: Json): string {
  const path = text(f.path) ?? '?';
  const problems = Array.isArray(f.problems) ? f.problems.filter((p): p is string => typeof p === 'string') : [];
  const state = text(f.state);
  if (state === 'missing') return `${path}: missing (no probes; rollouts are judged by soak time alone)`;
  if (state === 'loaded') return `${path}: read`;
  if (state === 'invalid') return `${path}: INVALID, the refused probes count as failing: ${problems.join('; ')}`;
  return `${path}: not read yet (read when a rollout starts soaking)`;
}

function verdictText(r: Json, now: Date): string {
  const state = text(r.state) ?? '?';
  if (state === 'Soaking') {
    const waiting = Array.isArray(r.waitingFor) ? r.waitingFor.filter((w): w is string => typeof w === 'string') : [];
    return waiting.length === 0 ? 'Soaking: converges at the next tick' : `Soaking: ${waiting.join('; ')}`;
  }
  if (state !== 'Failed' && state !== 'Reverted') return state;
  const failedAt = text(r.failedAt);
  const policy = text(r.policyApplied);
  const parts = [
    `${state}${failedAt === null ? '' : ` (failed ${sinceText(failedAt, now)})`}`,
    policy === null ? null : `policy ${policy}`,
  ];
  const rollback = record(r.rollback);
  if (rollback !== null) {
    const code = number(rollback.exitCode);
    parts.push(
      code === 0
        ? `rolled back to ${text(rollback.toClosure) ?? '?'}`
        : `ROLLBACK to ${text(rollback.toClosure) ?? '?'} FAILED (exit code ${String(code)}): the host needs an operator`,
    );
  }
  return parts.filter((p): p is string => p !== null).join('; ');
}

function probeText(p: Json, now: Date): string {
  const head = `${text(p.name) ?? '?'} (${text(p.kind) ?? '?'}, ${text(p.mode) ?? '?'})`;
  const since = text(p.since);
  // The document may come from another agent version: unknown values read as "no result".
  const result = text(p.lastResult);
  if (result === 'pass') return `${head}: pass${since === null ? '' : ` since ${sinceText(since, now)}`}`;
  if (result === 'fail') {
    return `${head}: FAIL${since === null ? '' : ` since ${sinceText(since, now)}`}: ${text(p.failureReason) ?? 'no reason given'}`;
  }
  return text(p.mode) === 'disabled' ? `${head}: not run` : `${head}: no result yet`;
}

function outboundText(o: Json): string {
  const pending = count(o.pending);
  const oldest = number(o.oldestPendingAgeSecs);
  const parts = [
    pending === null
      ? 'pending not known'
      : `${pending} pending${pending > 0 && oldest !== null ? ` (oldest ${formatDuration(oldest)})` : ''}`,
    `${count(o.delivered) ?? '?'} delivered`,
    `${count(o.refused) ?? '?'} refused`,
  ];
  const paused = text(o.deliveryPausedReason);
  return `${parts.join(', ')}${paused ? `; delivery PAUSED: ${paused}` : ''}`;
}

function replayText(r: Json): string {
  const rolloutId = text(r.rolloutId);
  if (rolloutId === null) return 'none asked for';
  const from = count(r.fromSeq);
  const missing = numbers(r.missing);
  const detail = `${rolloutId}${from === null ? '' : ` from seq ${from}`}: ${count(r.resent) ?? 0} resent, ${missing.length === 0 ? 'none missing' : `missing ${formatSeqs(missing)}`}`;
  return r.running === true ? `running, ${detail}` : `done, ${detail}`;
}

function certificateText(cert: Json | null, now: Date): string {
  if (cert === null) return 'not known';
  const left = certSecondsLeft(cert, now);
  const notAfter = text(cert.notAfter);
  const cn = text(cert.cn);
  const expiry =
    left === null ? 'expiry not known' : left <= 0 ? `EXPIRED ${formatDuration(-left)} ago` : `expires in ${formatDuration(left)}`;
  return `${cn === null ? '' : `CN ${cn}, `}${expiry}${notAfter === null ? '' : ` (${notAfter})`}`;
}

function warningText(w: Warning): string {
  switch (w.kind) {
    case 'readiness-unknown':
      return `control plane reachability not known for sure: ${w.why}`;
    case 'events-refused':
      return `the control plane refused ${w.count} event(s); they are kept on record and not retried`;
    case 'replay-missing':
      return `a replay${w.rolloutId === null ? '' : ` of ${w.rolloutId}`} could not resend seqs ${formatSeqs(w.seqs)}: retention had dropped them`;
    case 'activation-failed':
      return `the last ${w.activation}${w.rolloutId === null ? '' : ` of ${w.rolloutId}`} failed${w.exitCode === null ? '' : ` (exit code ${w.exitCode})`}${w.detail ? `: ${w.detail}` : ''}`;
    case 'clock-skew':
      // clockSkewSecs is how far the CP's clock is ahead of ours.
      return `this host's clock is ${Math.abs(w.secs)} s ${w.secs > 0 ? 'behind' : 'ahead of'} the control plane's`;
    case 'certificate-not-yet-valid':
      return `the client certificate is not valid yet${w.notBefore === null ? '' : ` (from ${w.notBefore})`}; check this host's clock`;
    case 'certificate-reload-failed':
      return `renewed certificate files are not in use: ${w.error}`;
    case 'dispatches-unverified':
      return w.warning;
    case 'dispatch-refused':
      return w.during === 'resume'
        ? `the resumed activation of ${w.rolloutId} was REFUSED (${w.reason}): ${w.detail}`
        : `the last dispatch, ${w.rolloutId}, was REFUSED (${w.reason}): ${w.detail}; not acknowledged, nothing switched`;
    case 'rollout-failed': {
      if (w.rollbackExitCode !== null && w.rollbackExitCode !== 0) {
        return `rollout ${w.rolloutId} failed and its rollback to ${w.rollbackTo ?? '?'} FAILED (exit code ${w.rollbackExitCode}): the host needs an operator`;
      }
      if (w.state === 'Reverted')
        return `rollout ${w.rolloutId} failed and was rolled back to ${w.rollbackTo ?? 'the closure from before it'}`;
      return w.policy === 'rollback-and-halt'
        ? `rollout ${w.rolloutId} failed; rolling back`
        : `rollout ${w.rolloutId} failed and was halted: the host still runs its closure`;
    }
    default: {
      const never: never = w;
      return never;
    }
  }
}

/** "3-5, 9": runs of seqs, at most a dozen shown. */
export function formatSeqs(seqs: readonly number[]): string {
  const sorted = [...new Set(seqs)].sort((a, b) => a - b);
  const runs: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j += 1;
    runs.push(i === j ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return runs.length > 12 ? `${runs.slice(0, 12).join(', ')}, ...` : runs.join(', ');
}

function ageSecs(iso: string | null, now: Date): number | null {
  if (iso === null) return null;
  const at = Date.parse(iso);
  return Number.isNaN(at) ? null : Math.max(0, Math.floor((now.getTime() - at) / 1000));
}

function record(v: unknown): Json | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : null;
}

function text(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

function number(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

function count(v: unknown): number | null {
  const n = number(v);
  return n !== null && Number.isInteger(n) ? n : null;
}

function numbers(v: unknown): number[] {
  return Array.isArray(v) ? v.filter((x): x is number => count(x) !== null) : [];
}

/** /readyz gives the message; /status's heartbeat gives `{ kind, message, at }`. */
function errorMessage(v: unknown): string | null {
  if (typeof v === 'string') return v;
  return text(record(v)?.message);
}

function firstLine(v: string | null): string | null {
  if (v === null) return null;
  const line = v.split('\n', 1)[0].trim();
  return line.length > 160 ? `${line.slice(0, 157)}...` : line;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
