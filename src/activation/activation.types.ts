import type { ActivationBackendName } from '../config/settings';

/** What ActivationStarted reports as `switchMethod`. */
export type SwitchMethod = 'symlink' | 'command' | 'switch-to-configuration switch' | 'switch-to-configuration boot';

export type ActivationOutcome =
  | { readonly kind: 'completed'; readonly observedCurrentClosure: string | null; readonly exitCode: number }
  /** `exitCode` null: it never ran, or a signal ended it (stderrTail says which). */
  | { readonly kind: 'failed'; readonly exitCode: number | null; readonly stderrTail: string }
  /** Installed, takes effect later (a reboot): `component` says what needs it. */
  | { readonly kind: 'deferred'; readonly component: string };

/**
 * One activation, decided but not run: the service reports `switchMethod`
 * (ActivationStarted) before it calls `run`, so "started" always comes first.
 */
export interface ActivationPlan {
  readonly switchMethod: SwitchMethod;
  /** Never rejects: every problem is a `failed` outcome. */
  run(): Promise<ActivationOutcome>;
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
  running: { rolloutId: string; closure: string; kind: ActivationKind; startedAt: string } | null;
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
