import type { ProbeMode } from '../protocol/rollout';
import type { RolloutHealth } from '../reducer/rollout-health';

/** What the agent made of the health-checks file at the last reset. */
export interface HealthChecksFileStatus {
  path: string;
  /** `invalid`: read, with problems (each refused probe counts as a failing enforce probe). */
  state: 'not-read' | 'missing' | 'loaded' | 'invalid';
  readAt: string | null;
  problems: string[];
}

/** One probe runner of the active rollout: its declaration and what its runs saw (every run, not only changes). */
export interface ProbeRunView {
  name: string;
  kind: string;
  mode: ProbeMode;
  intervalSecs: number;
  runOnce: boolean;
  /** Why the declaration was refused; null when it is valid. */
  problem: string | null;
  running: boolean;
  runs: number;
  lastRunAt: string | null;
  lastDurationMs: number | null;
  lastRunResult: 'pass' | 'fail' | null;
  lastRunReason: string | null;
}

export interface ProbeRunnerStatus {
  healthChecksFile: HealthChecksFileStatus;
  /** The rollout whose probes run; null when none soaks. */
  activeRollout: string | null;
  runners: ProbeRunView[];
}

/** `/status` `probes`: the runners, and each rollout worth judging (every Soaking one, and the latest). */
export interface ProbesStatus extends ProbeRunnerStatus {
  rollouts: RolloutHealth[];
}
