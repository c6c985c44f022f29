import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { join } from 'node:path';
import type { StoredEvent } from '../../dev/control-plane';

/**
 * Real things for the agent's probes to look at, on loopback and on disk:
 * an HTTP endpoint that can be told to fail, a TCP listener that can be
 * closed, exec scripts that pass, fail or never end; and the checks an e2e
 * spec runs on the probe events the dev CP received (PROTOCOL §6, §10).
 */

export type Json = Record<string, unknown>;

/** A loopback HTTP health endpoint: 200 while healthy, 503 once told to fail. */
export interface HealthEndpoint {
  readonly url: string;
  /** GETs answered so far. */
  readonly hits: () => number;
  setHealthy(healthy: boolean): void;
  close(): Promise<void>;
}

export async function startHealthEndpoint(): Promise<HealthEndpoint> {
  let healthy = true;
  let hits = 0;
  const server = http.createServer((req, res) => {
    hits += 1;
    res.writeHead(healthy ? 200 : 503, { 'content-type': 'text/plain' });
    res.end(healthy ? 'ok\n' : 'unavailable\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/health`,
    hits: () => hits,
    setHealthy: (h) => {
      healthy = h;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A loopback TCP listener; closing it makes connects to its port refused. */
export interface TcpListener {
  readonly port: number;
  readonly accepted: () => number;
  readonly open: () => boolean;
  close(): Promise<void>;
}

export async function startTcpListener(): Promise<TcpListener> {
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    accepted += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    accepted: () => accepted,
    open: () => server.listening,
    close: () =>
      new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Executable scripts for exec probes, in `dir`: absolute paths, run without a shell by the agent. */
export interface ExecScripts {
  /** Exits 0. */
  readonly pass: string;
  /** Writes a long line and two short ones to stderr, exits 1. */
  readonly fail: string;
}

/** The last stderr lines of `ExecScripts.fail`: the end of a failure reason. */
export const FAIL_SCRIPT_TAIL = ['db not ready: connection refused', 'giving up after 1 attempt'];

export function writeExecScripts(dir: string): ExecScripts {
  mkdirSync(dir, { recursive: true });
  const pass = join(dir, 'probe-pass.sh');
  const fail = join(dir, 'probe-fail.sh');
  writeFileSync(pass, '#!/bin/sh\nexit 0\n');
  // A first stderr line long enough that the reason must be cut to 512 characters.
  writeFileSync(fail, `#!/bin/sh\necho "${'x'.repeat(900)}" >&2\n${FAIL_SCRIPT_TAIL.map((l) => `echo "${l}" >&2`).join('\n')}\nexit 1\n`);
  chmodSync(pass, 0o755);
  chmodSync(fail, 0o755);
  return { pass, fail };
}

/** Writes a health-checks file (§10: a JSON object, probe name → camelCase declaration). */
export function writeHealthChecks(path: string, probes: Record<string, Json>): void {
  writeFileSync(path, `${JSON.stringify(probes, null, 2)}\n`);
}

// ---- the events the CP received ----

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

/** Each kind's fields besides `kind` and `seq` (PROTOCOL §6); `?` marks an optional one. */
const FIELDS: Record<string, string[]> = {
  DispatchAck: ['currentClosureAtDispatch', 'receivedAt'],
  ActivationStarted: ['startedAt', 'switchMethod'],
  ActivationCompleted: ['observedCurrentClosure', 'exitCode', 'completedAt'],
  ProbeTopologyDeclared: ['probes', 'declaredAt'],
  ProbeObservedFirst: ['probeName', 'mode', 'observedAt'],
  ProbeResult: ['probeName', 'mode', 'status', 'observedAt', 'failureReason?', 'subResults?'],
  ProbeFailureFirst: ['probeName', 'mode', 'firstFailedAt'],
  Failed: ['failedAt', 'sustainedDurationSecs', 'failingProbes', 'policyApplied'],
  RollbackComplete: ['revertedToClosure', 'exitCode', 'completedAt'],
  Converged: ['convergedAt', 'currentClosure'],
};

const MODES = ['enforce', 'observe', 'disabled'];

/**
 * What is wrong with one event's shape under §6 and §10: unknown or missing
 * fields, a mode or status outside its values, a timestamp that is not
 * RFC 3339 UTC, a failure reason over 512 characters. Empty when it is right.
 */
export function eventShapeProblems(e: Json): string[] {
  const kind = String(e.kind);
  const fields = FIELDS[kind];
  if (fields === undefined) return [`unexpected kind ${kind}`];
  const problems: string[] = [];
  const allowed = new Set(['kind', 'seq', ...fields.map((f) => f.replace('?', ''))]);
  for (const key of Object.keys(e)) if (!allowed.has(key)) problems.push(`${kind}: unexpected field ${key}`);
  for (const f of fields) if (!f.endsWith('?') && !(f in e)) problems.push(`${kind}: missing ${f}`);
  if (!Number.isInteger(e.seq)) problems.push(`${kind}: seq ${String(e.seq)}`);
  for (const key of ['receivedAt', 'startedAt', 'completedAt', 'declaredAt', 'observedAt', 'firstFailedAt', 'failedAt', 'convergedAt']) {
    if (key in e && !(typeof e[key] === 'string' && ISO.test(e[key]))) problems.push(`${kind}: ${key} ${JSON.stringify(e[key])}`);
  }
  if ('mode' in e && !MODES.includes(String(e.mode))) problems.push(`${kind}: mode ${String(e.mode)}`);
  if (kind === 'ProbeTopologyDeclared') {
    const probes = e.probes as Json[];
    if (!Array.isArray(probes)) problems.push('ProbeTopologyDeclared: probes is not an array');
    else
      for (const p of probes) {
        const keys = Object.keys(p).sort().join(',');
        if (keys !== 'kind,mode,probeName') problems.push(`ProbeTopologyDeclared: a probe with keys ${keys}`);
        if (!MODES.includes(String(p.mode))) problems.push(`ProbeTopologyDeclared: mode ${String(p.mode)}`);
      }
  }
  if (kind === 'ProbeResult') {
    if (e.status !== 'pass' && e.status !== 'fail') problems.push(`ProbeResult: status ${String(e.status)}`);
    if (e.status === 'pass' && 'failureReason' in e) problems.push('ProbeResult: a pass with a failureReason');
    if (e.status === 'fail' && typeof e.failureReason !== 'string') problems.push('ProbeResult: a fail without a failureReason');
    if (typeof e.failureReason === 'string' && Array.from(e.failureReason).length > 512) {
      problems.push(`ProbeResult: failureReason of ${Array.from(e.failureReason).length} characters`);
    }
  }
  if (kind === 'Failed') {
    if (e.policyApplied !== 'halt' && e.policyApplied !== 'rollback-and-halt')
      problems.push(`Failed: policyApplied ${String(e.policyApplied)}`);
    if (!Array.isArray(e.failingProbes) || e.failingProbes.length === 0) problems.push('Failed: no failingProbes');
    if (!Number.isInteger(e.sustainedDurationSecs)) problems.push(`Failed: sustainedDurationSecs ${String(e.sustainedDurationSecs)}`);
  }
  return problems;
}

/**
 * What is wrong with the order of a rollout's events as the CP holds them:
 * seqs from 1 without a gap; the activation first, then the topology; for
 * each probe its first observation before its first result, every result
 * a change of status, and a failure streak's start right after the failing
 * result that began it; a verdict after every probe event. Empty when right.
 */
export function eventOrderProblems(events: readonly StoredEvent[]): string[] {
  const problems: string[] = [];
  const kinds = events.map((e) => e.kind);
  events.forEach((e, i) => {
    if (e.seq !== i + 1) problems.push(`position ${i + 1} holds seq ${e.seq}`);
  });
  const head = ['DispatchAck', 'ActivationStarted', 'ActivationCompleted', 'ProbeTopologyDeclared'];
  if (kinds.slice(0, 4).join() !== head.join()) problems.push(`starts ${kinds.slice(0, 4).join(', ')}, not ${head.join(', ')}`);
  if (kinds.filter((k) => k === 'ProbeTopologyDeclared').length !== 1) problems.push('not exactly one ProbeTopologyDeclared');

  const declared = new Map<string, string>();
  for (const p of (events.find((e) => e.kind === 'ProbeTopologyDeclared')?.event.probes as Json[] | undefined) ?? []) {
    declared.set(String(p.probeName), String(p.mode));
  }
  const observed = new Set<string>();
  const lastStatus = new Map<string, unknown>();
  const verdict = kinds.findIndex((k) => k === 'Converged' || k === 'Failed');
  /** What every per-probe event must satisfy: a declared probe, its declared mode, before the verdict. */
  const probeEvent = (stored: StoredEvent, i: number): string => {
    const e = stored.event;
    const name = String(e.probeName);
    if (!declared.has(name)) problems.push(`seq ${e.seq}: ${stored.kind} of undeclared probe ${name}`);
    else if (declared.get(name) !== e.mode) problems.push(`seq ${e.seq}: ${stored.kind} of ${name} with mode ${String(e.mode)}`);
    if (verdict !== -1 && i > verdict) problems.push(`seq ${e.seq}: ${stored.kind} of ${name} after the verdict`);
    return name;
  };
  events.forEach((stored, i) => {
    const e = stored.event;
    switch (stored.kind) {
      case 'DispatchAck':
      case 'ActivationStarted':
      case 'ActivationCompleted':
      case 'ActivationDeferred':
      case 'ActivationFailed':
      case 'ProbeTopologyDeclared':
      case 'Failed':
      case 'RollbackComplete':
      case 'Converged':
        return;
      case 'ProbeObservedFirst': {
        const name = probeEvent(stored, i);
        if (observed.has(name)) problems.push(`seq ${e.seq}: a second ProbeObservedFirst of ${name}`);
        observed.add(name);
        return;
      }
      case 'ProbeResult': {
        const name = probeEvent(stored, i);
        if (!observed.has(name)) problems.push(`seq ${e.seq}: ProbeResult of ${name} before its ProbeObservedFirst`);
        if (lastStatus.get(name) === e.status) problems.push(`seq ${e.seq}: ProbeResult of ${name} repeats ${String(e.status)}`);
        lastStatus.set(name, e.status);
        return;
      }
      case 'ProbeFailureFirst': {
        const name = probeEvent(stored, i);
        const before = events[i - 1]?.event;
        if (before?.kind !== 'ProbeResult' || before.probeName !== name || before.status !== 'fail') {
          problems.push(`seq ${e.seq}: ProbeFailureFirst of ${name} not right after its failing ProbeResult`);
        } else if (before.observedAt !== e.firstFailedAt) {
          problems.push(`seq ${e.seq}: firstFailedAt ${String(e.firstFailedAt)} is not the failing result's ${String(before.observedAt)}`);
        }
        return;
      }
      default: {
        const never: never = stored.kind;
        problems.push(`seq ${e.seq}: unexpected kind ${String(never)}`);
      }
    }
  });
  for (const stored of events) problems.push(...eventShapeProblems(stored.event));
  return problems;
}

/** The CP's events of one kind (and probe, when given). */
export function eventsOf(events: readonly StoredEvent[], kind: string, probeName?: string): Json[] {
  return events.filter((e) => e.kind === kind && (probeName === undefined || e.event.probeName === probeName)).map((e) => e.event);
}
