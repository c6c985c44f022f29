import type { ActivationBackendName } from '../config/settings';

/** What ActivationStarted reports as `switchMethod`. */
export type SwitchMethod = 'symlink' | 'command' | 'switch-to-configuration switch' | 'switch-to-configuration boot';

export type ActivationOutcome =
  | { readonly kind: 'completed'; readonly observedCurrentClosure: string | null; readonly exitCode: number }
  /** `exitCode` null: it never ran, or a signal ended it (stderrTail says which). */
  | { readonly kind: 'failed'; readonly exitCode: number | null; readonly stderrTail: string }
  /** Installed, takes effect later (a reboot): `component` says what needs it. */
  | { readonly kind: 'deferred'; readonly component: string };

/** What a running activation is doing, for backends that say (nixos); null in /status for the others. */
export type ActivationPhase = 'realising' | 'waiting for the switch lock' | 'setting profile' | 'switching';

/** How far `nix-store --realise` has got, read from its stderr. */
export interface RealiseProgress {
  /** Its latest stderr line (e.g. "copying path '/nix/store/…' from 'https://cache…'"). */
  lastLine: string | null;
  /** From "these N paths will be fetched (…)"; null until Nix says (or when nothing is fetched). */
  pathsToFetch: number | null;
  /** Its "copying path" lines so far: paths whose download has begun. */
  pathsCopied: number;
  /** The download size Nix announced with the paths to fetch, in bytes (rounded); null until it says. */
  downloadBytes: number | null;
}

export interface ActivationProgress {
  readonly phase: ActivationPhase;
  /** One line for the log when the phase begins (what, and for how long at most). */
  readonly note: string;
  readonly realise: RealiseProgress | null;
}

/** Called by a running plan as it moves on; never throws back into the plan. */
export type ProgressSink = (progress: ActivationProgress) => void;

/**
 * One activation, decided but not run: the service reports `switchMethod`
 * (ActivationStarted) before it calls `run`, so "started" always comes first.
 */
export interface ActivationPlan {
  readonly switchMethod: SwitchMethod;
  /** Never rejects: every problem is a `failed` outcome. `onProgress` hears the phases of a backend that has them. */
  run(onProgress?: ProgressSink): Promise<ActivationOutcome>;
}

export interface ActivationBackend {
  readonly name: ActivationBackendName;
  /**
   * How long shutdown waits for a running activation: null until it ends (it
   * runs in the agent's process tree); a bound for one that runs detached and
   * continues without the agent.
   */
  readonly shutdownWaitMs: number | null;
  /** Validates the closure and picks the switch method. Never rejects. */
  plan(closure: string): Promise<ActivationPlan>;
  /**
   * What this backend would run or use but cannot find, one line each; empty
   * when everything is there. Checked at start, so a missing tool is said
   * before the first rollout needs it. Never rejects.
   */
  preflight(searchPath: string): Promise<string[]>;
}

/** `/status` `activation.preflight`: the backend's prerequisites, as checked at start. */
export interface ActivationPreflightStatus {
  checkedAt: string | null;
  problems: string[];
}

export type ActivationKind = 'switch' | 'rollback';

export interface ActivationStatus {
  backend: string;
  running: {
    rolloutId: string;
    closure: string;
    kind: ActivationKind;
    startedAt: string;
    /** null until the backend names one (command and symlink never do). */
    phase: ActivationPhase | null;
    /** The realise's progress once it has begun (nixos); null otherwise. */
    realise: RealiseProgress | null;
  } | null;
  /** Activations waiting behind the running one. */
  queued: number;
  lastResult: {
    rolloutId: string;
    kind: ActivationKind;
    outcome: ActivationOutcome['kind'];
    exitCode: number | null;
    at: string;
    detail: string;
  } | null;
}
