import type https from 'node:https';
import { HttpService } from '@nestjs/axios';
import { Inject, Injectable } from '@nestjs/common';
import { systemCaAgent } from './kinds/http.probe';
import { runProbeCheck } from './kinds';
import type { ProbeOutcome, ProbeSpec } from './probe.types';

/** A probe that outlives its timeout gets SIGTERM, then this long before SIGKILL: a health check has nothing to save. */
export const PROBE_KILL_GRACE_MS = 2_000;

/** The host programs the probe kinds run; tests point them at fakes. */
export interface ProbeTools {
  /** For the manifest's `systemdFailedUnits` gate. */
  readonly systemctl: string;
  readonly killGraceMs: number;
}

export const PROBE_TOOLS = Symbol('PROBE_TOOLS');
export const DEFAULT_PROBE_TOOLS: ProbeTools = { systemctl: 'systemctl', killGraceMs: PROBE_KILL_GRACE_MS };

/**
 * Runs one check of any kind, with what the kinds need from the agent: the
 * probes' own HTTP client (no client certificate, no CP headers) and an
 * agent trusting the system CAs, re-read at each reset (a new closure may
 * bring a new CA bundle).
 */
@Injectable()
export class ProbeChecker {
  private httpsAgent: https.Agent | null = null;

  constructor(
    private readonly http: HttpService,
    @Inject(PROBE_TOOLS) private readonly tools: ProbeTools,
  ) {}

  /** Drops the CA-trusting agent; builds a new one now when `https` probes will need it, else on first use. */
  async refresh(https: boolean): Promise<void> {
    const next = https ? await systemCaAgent() : null;
    this.httpsAgent?.destroy();
    this.httpsAgent = next;
  }

  async check(spec: ProbeSpec, signal: AbortSignal): Promise<ProbeOutcome> {
    if (this.httpsAgent === null) await this.refresh(true);
    return runProbeCheck(spec, signal, {
      axios: this.http.axiosRef,
      httpsAgent: this.httpsAgent as https.Agent,
      killGraceMs: this.tools.killGraceMs,
      systemctl: this.tools.systemctl,
    });
  }
}
