/** The backend chosen by `--activation-backend`; ActivationService drives it. */
export const ACTIVATION_BACKEND = Symbol('ACTIVATION_BACKEND');

/**
 * sysexits(3) EX_TEMPFAIL. Ours: an activation command exits with it to say
 * "installed, takes effect later" (e.g. a reboot is needed); the agent
 * reports ActivationDeferred with component "command".
 */
export const EX_TEMPFAIL = 75;

/** A switch that has not finished in this long is hung: it is killed and the activation fails. */
export const DEFAULT_ACTIVATION_TIMEOUT_MS = 30 * 60_000;

/** After SIGTERM, a child gets this long before SIGKILL. */
export const KILL_GRACE_MS = 10_000;

/** After the child exits, how long to wait for its stderr to close (a grandchild may hold it). */
export const EXIT_CLOSE_GRACE_MS = 2_000;

/** The CP wants a tail, not a log: the last bytes of stderr. */
export const STDERR_TAIL_BYTES = 4096;

/**
 * The nixos backend's programs and paths; options so that tests can point
 * them at fakes (no systemd or Nix in the test environment).
 */
export const NIXOS_DEFAULTS = {
  nixEnv: 'nix-env',
  systemdRun: 'systemd-run',
  bootedSystemPath: '/run/booted-system',
} as const;

/**
 * An activation command runs in the agent's process tree and dies with it:
 * shutdown waits this long for it (inside main's 25 s stop deadline, after a
 * heartbeat's 10 s), then the next start resumes the interrupted rollout.
 */
export const IN_TREE_SHUTDOWN_WAIT_MS = 12_000;

/** A detached switch continues without the agent: shutdown waits at most this long for its outcome. */
export const DETACHED_SHUTDOWN_WAIT_MS = 5_000;

/**
 * RollbackComplete's exitCode is a number: a rollback that never ran or was
 * killed by a signal reports -1 (what `status.code().unwrap_or(-1)` gives upstream).
 */
export const NO_EXIT_CODE = -1;
