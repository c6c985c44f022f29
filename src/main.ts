#!/usr/bin/env node
import 'reflect-metadata';
import { type INestApplication, Logger, type LoggerService } from '@nestjs/common';
import { IdentityError, loadIdentity } from './comms/identity';
import type { ReloadOutcome } from './comms/identity-watcher';
import { redactPem } from './common/pem';
import { type AgentConfig, loadConfig, type LoadResult, systemdEnv } from './config/config.loader';
import { loadTrustSetting } from './trust/trust-setting';
import { NOT_STARTED, settingProblem } from './config/config.messages';
import { formatListenAddress } from './config/listen-address';
import { prepareStateDir } from './config/state-dir';
import { holdReloadSignal } from './lifecycle/reload-signal';
import { createAgentLogger, SYSLOG_PRIORITY } from './logging/agent-logger';
import { journalStreams, withPriority } from './logging/journal-stream';
import { currentNodeRuntime, nodeRuntimeProblem } from './runtime/node-runtime';
import { AGENT_VERSION } from './version';

// The app, the state-dir lock and the identity watcher are imported inside
// `run`: `status` needs none of them, and they load native addons (flock(2)
// via fs-ext, unix datagrams for sd_notify) that a CLI has no use for. The
// other way round, the CLI commands are imported only by their command: the
// agent never runs them.

/** Where the inspection commands print. */
// What goes to stderr before the logger exists passes the logger's PEM rule too: a key pasted into a setting
// would otherwise reach the terminal or the journal in a problem line.
const cliIo = {
  out: (text: string): void => void process.stdout.write(`${text}\n`),
  err: (text: string): void => void process.stderr.write(`${redactPem(text)}\n`),
};

/** Exit status for a configuration error; the systemd unit does not restart on it. */
const EXIT_CONFIG = 2;

async function main(): Promise<number | null> {
  // First of all: on a Node.js without what the agent needs, every dispatch would fail later.
  const runtimeProblem = nodeRuntimeProblem(currentNodeRuntime());
  if (runtimeProblem) {
    startupError(`${runtimeProblem}\n`);
    return EXIT_CONFIG;
  }
  const loaded = loadConfig({ argv: process.argv.slice(2), env: process.env, stdoutIsTty: process.stdout.isTTY === true });
  switch (loaded.kind) {
    case 'help':
      process.stdout.write(`${loaded.text}\n`);
      return 0;
    case 'version':
      process.stdout.write(`nixfleet-agent ${AGENT_VERSION}\n`);
      return 0;
    case 'invalid':
      if (!loaded.inspecting) return configFailure(loaded.problems);
      // Nothing was going to start: the problem lines are all there is to say.
      for (const line of loaded.problems) startupError(`${line}\n`);
      return EXIT_CONFIG;
    case 'run':
      return run(loaded.config);
    case 'status':
    case 'config':
    case 'events':
    case 'diagnostics':
      for (const note of loaded.notes ?? []) cliIo.err(note);
      return runCommand(loaded);
    default: {
      const never: never = loaded;
      return never;
    }
  }
}

/** The commands other than the agent's run, each loaded only when asked for. */
async function runCommand(loaded: Extract<LoadResult, { kind: 'status' | 'config' | 'events' | 'diagnostics' }>): Promise<number> {
  switch (loaded.kind) {
    case 'status': {
      if (loaded.watch) {
        const { watchStatus } = await import('./cli/status.command');
        return watchStatus(loaded.adminAddress, loaded.json, loaded.watch.intervalSecs, {
          write: (text) => process.stdout.write(text),
          err: cliIo.err,
          tty: process.stdout.isTTY === true,
          // Node refreshes rows/columns on SIGWINCH: reading them per frame follows a resize.
          size: () => ({ rows: process.stdout.rows, columns: process.stdout.columns }),
        });
      }
      const { runStatusCommand } = await import('./cli/status.command');
      return runStatusCommand(loaded.adminAddress, loaded.json, cliIo);
    }
    case 'config': {
      const { runConfigCommand } = await import('./cli/config.command');
      return runConfigCommand(loaded.effective, loaded.problems, loaded.json, cliIo);
    }
    case 'events': {
      const { runEventsCommand } = await import('./cli/events.command');
      return runEventsCommand(loaded, cliIo);
    }
    case 'diagnostics': {
      const { runDiagnosticsCommand } = await import('./cli/diagnostics.command');
      return runDiagnosticsCommand(loaded, cliIo);
    }
    default: {
      const never: never = loaded;
      return never;
    }
  }
}

async function run(config: AgentConfig): Promise<number | null> {
  const logger = createAgentLogger(config.logFormat, config.logLevel, { journal: journalStreams(config.systemd.journalStream) });
  // Before anything slow: a SIGHUP during start-up must not kill the agent.
  const reloadSignal = holdReloadSignal(logger);
  // Checked here, before anything starts, so that a bad file is one line and
  // exit 2; CommsModule loads the files again for use (and watches them).
  try {
    loadIdentity(config);
  } catch (err) {
    if (err instanceof IdentityError) return configFailure(err.lines);
    throw err;
  }
  // The same for the trust roots: a dispatch must never be judged by a file nobody checked.
  const trust = await loadTrustSetting(config);
  if (!trust.ok) return configFailure(trust.problems);
  const stateDirProblem = prepareStateDir(config.stateDir);
  if (stateDirProblem) return configFailure([stateDirProblem]);
  // Before anything that writes the state dir: two agents on one event log lose events.
  const { lockStateDir } = await import('./lifecycle/state-dir-lock');
  const locked = lockStateDir(config.stateDir);
  switch (locked.kind) {
    case 'locked':
      // Held for the life of the process: its descriptor is never closed, and the kernel drops the lock at exit.
      break;
    case 'held':
      // Not a settings mistake to fix in a file: the one line says what to do.
      startupError(`${locked.line}\n`);
      return EXIT_CONFIG;
    case 'failed':
      return configFailure([locked.line]);
    default: {
      const never: never = locked;
      return never;
    }
  }

  const { bindAdmin, createAgentApp } = await import('./agent.app');
  // Before the app is built: a taken address is a settings problem, and no job may have run (no heartbeat went out).
  const admin = await bindAdmin(config.adminAddress);
  if (!admin.ok) return configFailure([settingProblem('adminListen', admin.problem)]);
  let app: INestApplication;
  try {
    app = await createAgentApp(config, logger, admin.adapter);
    await app.init();
  } catch (err) {
    // The bound listener would keep the process alive after the failure is reported.
    await admin.adapter.close();
    throw err;
  }
  admin.adapter.open();
  handleStopSignals(app, logger);
  await handleReloadSignal(app, logger, reloadSignal);
  new Logger('Bootstrap').log(
    `nixfleet-agent ${AGENT_VERSION} started for ${config.machineId}; control plane ${config.controlPlaneUrl}; status at ${formatListenAddress(config.adminAddress)}/status`,
  );
  // From here the process lives until a signal; Nest's shutdown hooks close the app.
  return null;
}

/** Worst case: a heartbeat at its 10 s deadline plus draining; far inside systemd's 90 s stop timeout. */
const SHUTDOWN_DEADLINE_MS = 25_000;

/**
 * Nest's own shutdown hooks re-raise the signal after closing, so the
 * process would die by SIGTERM; the unit expects exit 0 from a clean stop.
 *
 * A second stop signal while stopping is not an order to give up: Ctrl-C
 * reaches every process of the terminal's group, so an agent under a
 * supervisor (the demo, a container runtime, a shell script) gets SIGINT
 * from the terminal and SIGTERM from the supervisor at once. The stop goes
 * on, bounded by its deadline; only a third signal exits at once.
 */
function handleStopSignals(app: INestApplication, logger: LoggerService): void {
  let signals = 0;
  const stop = (signal: NodeJS.Signals): void => {
    signals += 1;
    if (signals === 2) {
      logger.log(
        `${signal} received while already stopping; still finishing in-flight work (at most ${SHUTDOWN_DEADLINE_MS / 1000} s in all); a third signal exits at once`,
        'Shutdown',
      );
      return;
    }
    if (signals > 2) {
      logger.warn?.(`${signal} received a third time while stopping; exiting now without finishing in-flight work`, 'Shutdown');
      process.exit(1);
    }
    logger.log(`${signal} received: stopping the jobs, finishing in-flight work, closing listeners`, 'Shutdown');
    const deadline = setTimeout(() => {
      // not a job: it bounds the stop of the app, job runtime included
      logger.error(`shutdown did not finish within ${SHUTDOWN_DEADLINE_MS / 1000} s; exiting anyway`, 'Shutdown');
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS);
    deadline.unref();
    app.close().then(
      () => {
        logger.log('stopped cleanly', 'Shutdown');
        process.exit(0);
      },
      (err: unknown) => {
        logger.error(`shutdown failed: ${(err as Error).message}`, 'Shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/**
 * SIGHUP (`systemctl reload`) re-reads the CA, client certificate and key
 * at once rather than when the watcher next notices; settings are not re-read.
 */
async function handleReloadSignal(
  app: INestApplication,
  logger: LoggerService,
  signal: ReturnType<typeof holdReloadSignal>,
): Promise<void> {
  const { IdentityWatcher, refusalText, reloadText } = await import('./comms/identity-watcher');
  const identity = app.get(IdentityWatcher);
  signal.reloadWith(() => {
    let outcome: ReloadOutcome;
    try {
      outcome = identity.checkNow();
    } catch (err) {
      logger.error(
        `SIGHUP received; re-reading the client identity files failed: ${(err as Error).message}; keeping the current identity`,
        'Reload',
      );
      return;
    }
    switch (outcome.kind) {
      case 'unchanged':
        logger.log(`SIGHUP received; client identity files re-read: unchanged, still ${outcome.identity}`, 'Reload');
        return;
      case 'reloaded':
        logger.log(`SIGHUP received; client identity reloaded: ${reloadText(outcome)}`, 'Reload');
        return;
      case 'refused':
        logger.warn?.(`SIGHUP received; client identity files cannot be used: ${refusalText(outcome)}`, 'Reload');
        return;
      default: {
        const never: never = outcome;
        return never;
      }
    }
  });
}

/**
 * Written before the logger exists (or instead of it): an error to journald
 * too, so `journalctl -p err` shows why the unit did not start.
 */
function startupError(raw: string): void {
  const text = redactPem(raw);
  const toJournal = journalStreams(systemdEnv(process.env, process.pid).journalStream).stderr;
  process.stderr.write(toJournal ? withPriority(text, SYSLOG_PRIORITY.error) : text);
}

function configFailure(lines: string[]): number {
  for (const line of lines) startupError(`${line}\n`);
  startupError(`${NOT_STARTED}\n`);
  return EXIT_CONFIG;
}

main().then(
  (code) => {
    if (code !== null) process.exitCode = code;
  },
  (err: unknown) => {
    startupError(`nixfleet-agent: failed to start: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
