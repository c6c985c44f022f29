import type { ClientRequest } from 'node:http';
import { HttpService } from '@nestjs/axios';
import { Inject, Injectable } from '@nestjs/common';
import type { AxiosResponse } from 'axios';
import { type Clock, CLOCK } from '../clock/clock';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { HeartbeatResponse, type HeartbeatRequest } from '../protocol/heartbeat.wire';
import { PATH_HEARTBEAT, TIMEOUTS } from '../protocol/protocol.constants';
import { validateWire } from '../protocol/validate';
import { classifyTransportError, type CpFailure, parseRetryAfter } from './cp-failure';
import { TlsAgentHolder } from './tls-agent.holder';

export interface CpResponse<T> {
  status: number;
  /** Lower-cased header names. */
  headers: Record<string, string>;
  body: T;
}

/** Failures that carry a response keep its headers: `Retry-After`, `Date` and `X-Nixfleet-Replay-From` matter even then. */
export type CpResult<T> =
  | { ok: true; response: CpResponse<T> }
  | { ok: false; failure: CpFailure; headers: Record<string, string> | null };

export interface CallOptions {
  /** Hard deadline for the whole call, connect to last body byte; at most the 30 s default. */
  deadlineMs?: number;
  /** Aborts the call early, e.g. on shutdown. */
  signal?: AbortSignal;
}

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  text: string;
}

/** The protocol's calls, typed: status, headers and the validated body, or a classified failure. */
@Injectable()
export class ControlPlaneClient {
  constructor(
    private readonly http: HttpService,
    private readonly tls: TlsAgentHolder,
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  get baseUrl(): string {
    return this.config.controlPlaneUrl.replace(/\/+$/, '');
  }

  async heartbeat(body: HeartbeatRequest, options: CallOptions = {}): Promise<CpResult<HeartbeatResponse>> {
    const raw = await this.call('POST', PATH_HEARTBEAT, JSON.stringify(body), {
      deadlineMs: options.deadlineMs ?? TIMEOUTS.heartbeatMs,
      signal: options.signal,
    });
    if (!raw.ok) return raw;
    const { status, headers, text } = raw.answer;
    if (status < 200 || status > 299) return this.statusFailure(raw.answer);
    const parsed = parseJson(text);
    if (!parsed.ok) return { ok: false, failure: { kind: 'bad-body', detail: parsed.reason, status }, headers };
    const checked = validateWire(HeartbeatResponse, parsed.value);
    if (!checked.ok) {
      return { ok: false, failure: { kind: 'bad-body', detail: checked.problems.join('; '), status }, headers };
    }
    return { ok: true, response: { status, headers, body: checked.value } };
  }

  /** One request with the hard deadline; the answer's status is not judged here. */
  async call(
    method: 'GET' | 'POST',
    path: string,
    data: string | undefined,
    options: CallOptions,
  ): Promise<{ ok: true; answer: RawAnswer } | { ok: false; failure: CpFailure; headers: null }> {
    const deadlineMs = Math.min(options.deadlineMs ?? TIMEOUTS.defaultRequestMs, TIMEOUTS.defaultRequestMs);
    // axios's `timeout` only limits idle time; a peer that dribbles bytes
    // would outlive it. The abort signal is a deadline for the whole call.
    const deadline = AbortSignal.timeout(deadlineMs);
    const signal = options.signal ? AbortSignal.any([deadline, options.signal]) : deadline;
    try {
      const res: AxiosResponse<string> = await this.http.axiosRef.request({
        method,
        url: `${this.baseUrl}${path}`,
        data,
        headers: data === undefined ? {} : { 'Content-Type': 'application/json' },
        httpsAgent: this.tls.current(),
        signal,
      });
      return { ok: true, answer: { status: res.status, headers: plainHeaders(res.headers), text: res.data ?? '' } };
    } catch (err) {
      const request = (err as { request?: ClientRequest }).request;
      const failure = classifyTransportError(err, {
        deadlineMs,
        deadlineHit: deadline.aborted,
        reusedSocket: request?.reusedSocket === true,
      });
      return { ok: false, failure, headers: null };
    }
  }

  statusFailure(answer: RawAnswer): { ok: false; failure: CpFailure; headers: Record<string, string> } {
    const retryAfterSecs = parseRetryAfter(answer.headers['retry-after'], this.clock.now());
    return {
      ok: false,
      failure: { kind: 'http-status', status: answer.status, retryAfterSecs, detail: snippet(answer.text) },
      headers: answer.headers,
    };
  }
}

function plainHeaders(headers: AxiosResponse['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (value === undefined || value === null) continue;
    out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return out;
}

export function parseJson(text: string): { ok: true; value: unknown } | { ok: false; reason: string } {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return { ok: false, reason: `not JSON (${(err as Error).message})` };
  }
}

/** Enough of an error body to say what the CP meant, never a whole page. */
function snippet(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  if (flat === '') return 'no body';
  return flat.length > 200 ? `${flat.slice(0, 197)}...` : flat;
}
