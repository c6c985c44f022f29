/**
 * The signed rollout manifest's `healthGate` (PROTOCOL §10, §12), once the
 * agent has verified the manifest of a rollout. Its `systemdFailedUnits`
 * becomes an implicit enforce probe.
 */
export interface HealthGate {
  readonly systemdFailedUnits?: { readonly max: number };
  readonly complianceProbes?: { readonly required: boolean };
}

/** Where the probe runners ask for a rollout's verified health gate (the trust module's TrustService). */
export interface HealthGateSource {
  /** null: no verified manifest for that rollout, or it carries no gate. */
  gateFor(rolloutId: string): Promise<HealthGate | null>;
}

export const HEALTH_GATE = Symbol('HEALTH_GATE');
