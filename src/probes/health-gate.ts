/**
 * The signed rollout manifest's `healthGate` (PROTOCOL §10, §12), once the
 * agent has verified the manifest of a rollout. Its `systemdFailedUnits`
 * becomes an implicit enforce probe.
 */
export interface HealthGate {
  readonly systemdFailedUnits?: { readonly max: number };
  readonly complianceProbes?: { readonly required: boolean };
}

/** Where the probe runners ask for a rollout's verified health gate. */
export interface HealthGateSource {
  /** null: no verified manifest for that rollout, or it carries no gate. */
  gateFor(rolloutId: string): Promise<HealthGate | null>;
}

export const HEALTH_GATE = Symbol('HEALTH_GATE');

/**
 * No verified manifests yet: the trust module of PROTOCOL §12 binds the real
 * source under HEALTH_GATE; until then no rollout has a gate.
 */
export class NoHealthGate implements HealthGateSource {
  gateFor(): Promise<HealthGate | null> {
    return Promise.resolve(null);
  }
}
