import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../../dev/free-port';
import type { ClientIdentity } from '../../dev/pki';
import type { JsonLogEntry } from '../../src/logging/agent-logger';
import { testArgs } from './agent-config';
import type { World } from './agent-harness';

export const AGENT_MAIN = join(__dirname, '..', '..', 'dist', 'main.js');

/** Only NIXFLEET_AGENT_* variables the test sets reach the agent; the rest of the env is passed through. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  // NIXFLEET_AGENT_CONFIG set and empty: no settings file, so a host's /etc/nixfleet-agent.json never steers a test.
  const env: NodeJS.ProcessEnv = { TZ: 'UTC', NIXFLEET_AGENT_CONFIG: '' };
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('NIXFLEET_AGENT_') && !k.startsWith('JEST_') && k !== 'NODE_OPTIONS') env[k] = v;
  }
  return { ...env, ...extra };
}

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built agent to completion (for commands that exit on their own). */
export function runAgentSync(args: string[], env: Record<string, string> = {}, timeoutMs = 20_000): RunResult {
  const r = spawnSync(process.execPath, [AGENT_MAIN, ...args], {
    env: cleanEnv(env),
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export interface RunningAgent {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code (or the signal name) once the process is gone. */
  exited: Promise<number | string>;
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<string>;
}

/** Starts the built agent as a real child process; its stdout and stderr are collected. */
export function startAgent(args: string[], env: Record<string, string> = {}): RunningAgent {
  return collect(spawn(process.execPath, [AGENT_MAIN, ...args], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] }));
}

/**
 * Like `startAgent`, but the process stops itself (SIGSTOP) before Node
 * starts, so a test can prepare what needs the agent's pid; SIGCONT lets it
 * go on. Resolves once it is stopped.
 */
export async function startAgentStopped(args: string[], env: Record<string, string> = {}): Promise<RunningAgent> {
  // `exec` keeps the pid: the stopped shell becomes the agent.
  const child = spawn('/bin/sh', ['-c', 'kill -STOP $$; exec "$@"', 'sh', process.execPath, AGENT_MAIN, ...args], {
    env: cleanEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const agent = collect(child);
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`the agent's shell exited before stopping; output:\n${agent.output()}`);
    if (child.pid !== undefined && processState(child.pid) === 'T') return agent;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The state letter of /proc/<pid>/stat (R, S, T for stopped...); null once the process is gone. */
function processState(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name is in parentheses and may contain anything: the state follows the last ")".
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return null;
  }
}

function collect(child: ChildProcess): RunningAgent {
  let text = '';
  const listeners = new Set<() => void>();
  const onData = (chunk: Buffer): void => {
    text += chunk.toString('utf8');
    for (const l of listeners) l();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const exited = new Promise<number | string>((resolve) => {
    child.on('exit', (code, signal) => {
      for (const l of listeners) l();
      resolve(code ?? signal ?? 'unknown');
    });
  });
  return {
    child,
    output: () => text,
    exited,
    waitForOutput(pattern, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const m = pattern.exec(text);
          if (m) {
            listeners.delete(check);
            clearTimeout(timer);
            resolve(m[0]);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            listeners.delete(check);
            clearTimeout(timer);
            reject(new Error(`agent exited (${child.exitCode ?? child.signalCode}) before printing ${pattern}; output:\n${text}`));
          }
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`agent did not print ${pattern} within ${timeoutMs} ms; output:\n${text}`));
        }, timeoutMs);
        listeners.add(check);
        check();
      });
    },
  };
}

/** Test cleanup: SIGKILLs an agent a test left running and waits until it is gone. */
export async function killIfRunning(agent: RunningAgent | null): Promise<void> {
  if (agent && agent.child.exitCode === null && agent.child.signalCode === null) {
    agent.child.kill('SIGKILL');
    await agent.exited;
  }
}

/** The exit status, or a failure if the process is still there after `ms` (a hang, not a slow stop). */
export async function exitWithin(agent: RunningAgent, ms: number): Promise<number | string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`agent still running ${ms} ms after SIGTERM; output:\n${agent.output()}`)), ms);
  });
  try {
    return await Promise.race([agent.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The agent's JSON log lines so far (stdout and stderr interleaved; other lines are skipped). */
export function logLines(agent: RunningAgent): JsonLogEntry[] {
  return agent
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as JsonLogEntry);
}

/** Printed once the admin listener is up (on a loopback TCP port). */
export const ADMIN_LISTENING = /status at 127\.0\.0\.1:\d+\/status/;
/** Printed once the heartbeat job runs, at a 1 s interval. */
export const HEARTBEAT_STARTED = /"heartbeat every 1 s/;

export interface WorldAgentOptions {
  stateDir: string;
  /** `--admin-listen`: `127.0.0.1:<port>` or `unix:<path>`. */
  adminListen: string;
  /** Default the world's CP. */
  controlPlaneUrl?: string;
  caCertPath?: string;
  /** Default the world's client certificate and key. */
  identity?: ClientIdentity;
  /** Default 1. */
  heartbeatSecs?: number;
  /**
   * Activate by re-pointing the world's current-system link into its store: a
   * backend this machine can run, so its start-up preflight does not warn.
   * Default the agent's own default (nixos).
   */
  symlinkActivation?: boolean;
  /** Flags after the others (they win). */
  extra?: string[];
}

/** The built agent's flags to run against `world`: its CP and PKI, JSON logs, an admin listener. */
export function worldAgentArgs(world: World, o: WorldAgentOptions): string[] {
  return [
    ...testArgs({
      pki: world.pki,
      controlPlaneUrl: o.controlPlaneUrl ?? world.cp.url,
      stateDir: o.stateDir,
      currentSystemPath: world.currentSystemPath,
      caCertPath: o.caCertPath,
      identity: o.identity,
      trustFile: world.trustFile,
    }),
    '--heartbeat-interval',
    String(o.heartbeatSecs ?? 1),
    '--admin-listen',
    o.adminListen,
    ...(o.symlinkActivation ? ['--activation-backend', 'symlink', '--store-dir', world.storeDir] : []),
    ...(o.extra ?? []),
  ];
}

export interface AdminAgentOptions extends Omit<WorldAgentOptions, 'adminListen'> {
  /** The admin port on 127.0.0.1: default a free one; pass the old one to restart on it. */
  port?: number;
  env?: Record<string, string>;
  /** What to wait for in the output before resolving: default `ADMIN_LISTENING`; null: nothing. */
  readyWhen?: RegExp | null;
  /** Default 15 s. */
  readyTimeoutMs?: number;
}

export interface AdminAgent {
  agent: RunningAgent;
  port: number;
  /** `127.0.0.1:<port>`, for `--admin-listen` of the CLI. */
  admin: string;
}

/**
 * Starts the built agent against `world` with its admin listener on a
 * loopback port, and waits until it is ready. An agent that never gets
 * ready is SIGKILLed before the failure is thrown: no test leaves it behind.
 */
export async function startAdminAgent(world: World, o: AdminAgentOptions): Promise<AdminAgent> {
  const port = o.port ?? (await freePort());
  const admin = `127.0.0.1:${port}`;
  const agent = startAgent(worldAgentArgs(world, { ...o, adminListen: admin }), o.env);
  const readyWhen = o.readyWhen === undefined ? ADMIN_LISTENING : o.readyWhen;
  if (readyWhen) {
    try {
      await agent.waitForOutput(readyWhen, o.readyTimeoutMs);
    } catch (err) {
      await killIfRunning(agent);
      throw err;
    }
  }
  return { agent, port, admin };
}
