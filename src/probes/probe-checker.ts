import type https from 'node:https';
import { HttpService } from '@nestjs/axios';
import { Injectable } from '@nestjs/common';
import { systemCaAgent } from './kinds/http.probe';
import { runProbeCheck } from './kinds';
import type { ProbeOutcome, ProbeSpec } from './probe.types';

/** A probe that outlives its timeout gets SIGTERM, then this long before SIGKILL: a health check has nothing to save. */
export const PROBE_KILL_GRACE_MS = 2_000;

/**
 * Runs one check of any kind, with what the kinds need from the agent: the
 * probes' own HTTP client (no client certificate, no CP headers) and an
 * agent trusting the system CAs, re-read at each reset (a new closure may
 * bring a new CA bundle).
 */
@Injectable()
export class ProbeChecker {
  private httpsAgent: https.Agent | null = null;

  constructor(private readonly http: HttpService) {}

  async refresh(): Promise<void> {
    const next = await systemCaAgent();
    this.httpsAgent?.destroy();
    this.httpsAgent = next;
  }

  async check(spec: ProbeSpec, signal: AbortSignal): Promise<ProbeOutcome> {
    if (this.httpsAgent === null) await this.refresh();
    return runProbeCheck(spec, signal, {
      axios: this.http.axiosRef,
      httpsAgent: this.httpsAgent as https.Agent,
      killGraceMs: PROBE_KILL_GRACE_MS,
    });
  }
}
