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
  nixStore: 'nix-store',
  nixEnv: 'nix-env',
  systemdRun: 'systemd-run',
  bootedSystemPath: '/run/booted-system',
  /** NixOS's switch-to-configuration holds an exclusive flock on it while it runs. */
  switchLockPath: '/run/nixos/switch-to-configuration.lock',
} as const;

/**
 * A realise that has not finished in this long is stuck (a dead cache, a
 * stalled download): it is killed and the activation fails. As long as a
 * switch may take: a large closure over a slow link takes minutes.
 */
export const DEFAULT_REALISE_TIMEOUT_MS = 30 * 60_000;

/** How long an activation waits for another switch-to-configuration to release its lock before it fails. */
export const DEFAULT_SWITCH_LOCK_WAIT_MS = 5 * 60_000;

/** How often a waiting activation tries the switch lock again. */
export const SWITCH_LOCK_POLL_MS = 1_000;

/** While an activation runs, its progress is logged at most this often (phase changes at once). */
export const PROGRESS_LOG_INTERVAL_MS = 15_000;

/** §13: ActivationFailed's exit code when the realise failed on a signature (the closure is not trusted). */
export const SIGNATURE_FAILURE_EXIT_CODE = -2;

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
