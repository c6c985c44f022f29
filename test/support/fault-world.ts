import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DevCpOptions } from '../../dev/control-plane';
import { freePort } from '../../dev/free-port';
import { type ClientIdentity, makePki, type Pki } from '../../dev/pki';
import { type AdminAnswer, getFromAdmin } from '../../src/cli/admin-request';
import type { JsonLogEntry } from '../../src/logging/agent-logger';
import { adminAt, getText, type Json } from './admin-http';
import { fakeClosure, makeWorld, type World } from './agent-harness';
import { HEARTBEAT_STARTED, killIfRunning, logLines, type RunningAgent, startAgent, worldAgentArgs } from './agent-process';
import { eventually } from './polling';

/**
 * The fault suite's world: the built agent as a child process against the dev
 * CP, with a 1 s heartbeat and its admin listener on a free loopback port.
 * Everything an operator would look at is here: /status, /metrics, /readyz
 * and the JSON log lines; what the CP received is in cp-record.ts.
 */

export type { Json };

/** A PKI in its own dir, for worlds that share it (each world's dir goes when the world closes). */
export async function makeSharedPki(): Promise<{ pki: Pki; remove(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'nfa-fault-pki-'));
  const pki = await makePki(dir);
  return { pki, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function makeFaultWorld(cpOptions: Partial<DevCpOptions> = {}, pki?: Pki): Promise<World> {
  return makeWorld({ dispatchWaitCapMs: 60_000, ...cpOptions }, { pki });
}

export interface FaultAgentOptions {
  /** Default `<world.dir>/state`; pass the same dir to restart an agent on its state. */
  stateDir?: string;
  /** Default a fresh free port; pass the old one on a restart. */
  adminPort?: number;
  controlPlaneUrl?: string;
  caCertPath?: string;
  identity?: ClientIdentity;
  /** Flags after the defaults (they win). */
  extra?: string[];
  env?: Record<string, string>;
  /** What to wait for before returning; default the heartbeat job starting; null: nothing. */
  readyWhen?: RegExp | null;
}

export interface FaultAgent {
  run: RunningAgent;
  port: number;
  stateDir: string;
  status(): Promise<Json>;
  /** Polls /status until `accept` holds (the agent's view settles a moment after the CP's). */
  statusWhen(accept: (s: Json) => boolean, what: string, timeoutMs?: number): Promise<Json>;
  admin(path: string): Promise<AdminAnswer>;
  metricsText(): Promise<string>;
  /** The agent's JSON log lines so far (stdout and stderr). */
  logs(): JsonLogEntry[];
  /** Messages at warn level or worse. */
  problems(): string[];
  waitForLog(pattern: RegExp, what: string, timeoutMs?: number): Promise<JsonLogEntry>;
  /**
   * Every distinct /status document seen by a poll every 200 ms since start:
   * a fault that lasts a few seconds is asserted after the fact.
   */
  readonly history: Json[];
  /** SIGTERM; resolves with the exit code (or signal). */
  stop(): Promise<number | string>;
  /** SIGKILL: no shutdown hooks run. */
  kill(): Promise<number | string>;
}

const running = new Set<RunningAgent>();

/** Starts the built agent on `world`: symlink activation into the world's store, heartbeat every second. */
export async function startFaultAgent(world: World, o: FaultAgentOptions = {}): Promise<FaultAgent> {
  const stateDir = o.stateDir ?? join(world.dir, 'state');
  const port = o.adminPort ?? (await freePort());
  const args = worldAgentArgs(world, {
    stateDir,
    adminListen: `127.0.0.1:${port}`,
    controlPlaneUrl: o.controlPlaneUrl,
    caCertPath: o.caCertPath,
    identity: o.identity,
    symlinkActivation: true,
    extra: o.extra,
  });
  const run = startAgent(args, o.env);
  running.add(run);
  void run.exited.then(() => running.delete(run));
  const agent = faultAgent(run, port, stateDir);
  recordStatus(agent);
  const readyWhen = o.readyWhen === undefined ? HEARTBEAT_STARTED : o.readyWhen;
  // Generous: several agents may start at once on a loaded machine.
  if (readyWhen) await run.waitForOutput(readyWhen, 40_000);
  return agent;
}

/** afterAll: SIGKILLs every fault agent still running. */
export async function killAllFaultAgents(): Promise<void> {
  await Promise.all([...running].map((r) => killIfRunning(r)));
}

function faultAgent(run: RunningAgent, port: number, stateDir: string): FaultAgent {
  const address = adminAt(port);
  const logs = (): JsonLogEntry[] => logLines(run);
  const agent: FaultAgent = {
    run,
    port,
    stateDir,
    history: [],
    admin: (path) => getFromAdmin(address, path),
    async status() {
      return (await getFromAdmin(address, '/status')).body as Json;
    },
    async statusWhen(accept, what, timeoutMs = 15_000) {
      let last: unknown = 'no answer yet';
      await eventually(
        async () => {
          try {
            last = await agent.status();
            return accept(last as Json);
          } catch (err) {
            last = (err as Error).message;
            return false;
          }
        },
        timeoutMs,
        what,
        () => `last /status: ${JSON.stringify(last)}\noutput:\n${run.output()}`,
      );
      return last as Json;
    },
    async metricsText() {
      // /metrics is text: getFromAdmin wants JSON, so a plain GET.
      return (await getText(port, '/metrics')).text;
    },
    logs,
    problems: () =>
      logs()
        .filter((l) => l.level === 'warn' || l.level === 'error' || l.level === 'fatal')
        .map((l) => l.message),
    async waitForLog(pattern, what, timeoutMs = 15_000) {
      let found: JsonLogEntry | undefined;
      await eventually(
        () => {
          found = logs().find((l) => pattern.test(l.message));
          return found !== undefined;
        },
        timeoutMs,
        what,
        () => `output:\n${run.output()}`,
      );
      return found as JsonLogEntry;
    },
    async stop() {
      run.child.kill('SIGTERM');
      return run.exited;
    },
    async kill() {
      run.child.kill('SIGKILL');
      return run.exited;
    },
  };
  return agent;
}

function recordStatus(agent: FaultAgent): void {
  let last = '';
  const poll = async (): Promise<void> => {
    while (agent.run.child.exitCode === null && agent.run.child.signalCode === null) {
      try {
        const s = await agent.status();
        // Uptime and the admin's own clock readings change every poll; the rest is what matters.
        const key = JSON.stringify({ ...s, uptimeSecs: 0, outbound: { ...(s.outbound as Json), oldestPendingAgeSecs: 0 } });
        if (key !== last) agent.history.push(s);
        last = key;
      } catch {
        // Not listening yet, or gone.
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  void poll();
}

export { fakeClosure, type World };
