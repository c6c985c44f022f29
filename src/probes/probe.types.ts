import type { ProbeMode } from '../protocol/rollout';

// The health checks of PROTOCOL §10, as the agent runs them. The file's
// camelCase declarations are parsed once (health-checks.file.ts) into these
// specs, with defaults applied and seconds turned into milliseconds.

export interface HttpProbeSpec {
  readonly kind: 'http';
  readonly url: string;
  readonly expectStatus: number;
  readonly timeoutMs: number;
}

export interface TcpProbeSpec {
  readonly kind: 'tcp';
  readonly host: string;
  readonly port: number;
  readonly connectTimeoutMs: number;
}

export interface ExecProbeSpec {
  readonly kind: 'exec';
  /** argv: run directly, no shell. */
  readonly command: readonly string[];
  readonly timeoutMs: number;
}

/** The signed manifest's `healthGate.systemdFailedUnits` (§10, §12): an implicit enforce probe. */
export interface SystemdFailedUnitsSpec {
  readonly kind: 'systemd-failed-units';
  /** Pass while the number of failed units is at most this. */
  readonly max: number;
  readonly timeoutMs: number;
}

/**
 * A declaration the agent could not accept (bad JSON, a missing or wrong
 * field, an unknown kind). It is declared and reported as a failing enforce
 * probe: a typo must never make a rollout pass.
 */
export interface InvalidProbeSpec {
  readonly kind: 'invalid';
  /** The kind the file named, or `invalid` when it named none we could read. */
  readonly declaredKind: string;
  /** One line: the file, the probe and the field, and what is wrong. */
  readonly problem: string;
}

export type ProbeSpec = HttpProbeSpec | TcpProbeSpec | ExecProbeSpec | SystemdFailedUnitsSpec | InvalidProbeSpec;
export type ProbeSpecKind = ProbeSpec['kind'];

export interface ProbeDeclaration {
  readonly name: string;
  readonly mode: ProbeMode;
  /** Floored to MIN_PROBE_INTERVAL_MS. */
  readonly intervalMs: number;
  /** Run once per rollout, not on a ticker. */
  readonly runOnce: boolean;
  readonly spec: ProbeSpec;
}

export interface ProbeOutcome {
  readonly status: 'pass' | 'fail';
  /** Only on `fail`; at most MAX_FAILURE_REASON_CHARS characters. */
  readonly failureReason?: string;
  readonly durationMs: number;
}

/** PROTOCOL §10 defaults. */
export const PROBE_DEFAULTS = {
  intervalSeconds: 30,
  expectStatus: 200,
  timeoutSecs: 10,
  host: '127.0.0.1',
  connectTimeoutSecs: 5,
} as const;

/** §10: `intervalSeconds` is floored to 5. */
export const MIN_PROBE_INTERVAL_MS = 5_000;

/** §10: `failureReason` is cut to 512 characters. */
export const MAX_FAILURE_REASON_CHARS = 512;

/** §10: an exec failure carries the last 3 stderr lines. */
export const EXEC_STDERR_LINES = 3;

/** The implicit probe of the manifest's `healthGate.systemdFailedUnits`. */
export const SYSTEMD_FAILED_UNITS_PROBE = 'systemd-failed-units';

/** The probe declared when the health-checks file as a whole cannot be read as JSON of the right shape. */
export const HEALTH_CHECKS_FILE_PROBE = 'health-checks-file';
