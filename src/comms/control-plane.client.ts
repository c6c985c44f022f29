import type { ClientRequest } from 'node:http';
import { HttpService } from '@nestjs/axios';
import { Inject, Injectable } from '@nestjs/common';
import type { AxiosResponse } from 'axios';
import { type Clock, CLOCK } from '../clock/clock';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { HeartbeatResponse, type HeartbeatRequest } from '../protocol/heartbeat.wire';
import { DispatchOrder } from '../protocol/dispatch.wire';
import {
  MAX_ROLLOUT_ARTIFACT_BYTES,
  PATH_DISPATCH,
  PATH_EVENTS,
  PATH_HEARTBEAT,
  PATH_ROLLOUTS,
  TIMEOUTS,
} from '../protocol/protocol.constants';
import { validateWire } from '../protocol/validate';
import { classifyTransportError, type CpFailure, parseRetryAfter, RETRY_AFTER_STATUSES } from './cp-failure';
import { handshakeStageOf } from './tls-agent';
import { TlsAgentHolder } from './tls-agent.holder';

export interface CpResponse<T> {
  status: number;
  /** Lower-cased header names. */
  headers: Record<string, string>;
  body: T;
  /** The request opened a connection: its time includes the TCP and TLS handshakes, not only the CP's answer. */
  newConnection: boolean;
}

/** Failures that carry a response keep its headers: `Retry-After` and `Date` matter even then. */
export type CpResult<T> = { ok: true; response: CpResponse<T> } | { ok: false; failure: CpFailure; headers: Record<string, string> | null };

export interface CallOptions {
  /** Hard deadline for the whole call, connect to last body byte; 30 s unless the call says otherwise. */
  deadlineMs?: number;
  /** Aborts the call early, e.g. on shutdown. */
  signal?: AbortSignal;
  /** Refuse a response body larger than this; MAX_RESPONSE_BYTES unless the call says otherwise. */
  maxBytes?: number;
}

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  text: string;
  /** The body's exact bytes: a signature is binary, and a manifest is verified as sent. */
  bytes: Buffer;
  newConnection: boolean;
}

/** PROTOCOL §12's two rollout artifacts: the manifest (JSON) and its raw signature. */
export type RolloutArtifact = 'manifest' | 'signature';

/** Which connection pool a call uses (see TlsAgentHolder). */
export type CpPool = 'control' | 'delivery';

// One object each, not one per call: axios copies them into the request.
const JSON_BODY_HEADERS = { 'Content-Type': 'application/json' };
const NO_EXTRA_HEADERS = {};

/** The protocol's calls, typed: status, headers and the validated body, or a classified failure. */
@Injectable()
export class ControlPlaneClient {
  readonly baseUrl: string;

  constructor(
    private readonly http: HttpService,
    private readonly tls: TlsAgentHolder,
    @Inject(AGENT_CONFIG) config: AgentConfig,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {
    this.baseUrl = config.controlPlaneUrl.replace(/\/+$/, '');
  }

  async heartbeat(body: HeartbeatRequest, options: CallOptions = {}): Promise<CpResult<HeartbeatResponse>> {
    const raw = await this.call('POST', PATH_HEARTBEAT, JSON.stringify(body), {
      deadlineMs: options.deadlineMs ?? TIMEOUTS.heartbeatMs,
      signal: options.signal,
    });
    if (!raw.ok) return raw;
    const { status, headers, text, newConnection } = raw.answer;
    if (status < 200 || status > 299) return this.statusFailure(raw.answer);
    const parsed = parseJson(text);
    if (!parsed.ok) return { ok: false, failure: { kind: 'bad-body', detail: parsed.reason, status }, headers };
    const checked = validateWire(HeartbeatResponse, parsed.value);
    if (!checked.ok) {
      return { ok: false, failure: { kind: 'bad-body', detail: checked.problems.join('; '), status }, headers };
    }
    return { ok: true, response: { status, headers, body: checked.value, newConnection } };
  }

  /**
   * POSTs one event envelope, exactly these bytes (a replay resends what was
   * first sent). Any status comes back as an answer: PROTOCOL §6 gives 204,
   * 409 and each 4xx its own meaning, which is the drainer's to apply.
   */
  async postEvent(envelope: string, options: CallOptions = {}): Promise<CpResult<null>> {
    const raw = await this.call(
      'POST',
      PATH_EVENTS,
      envelope,
      { deadlineMs: options.deadlineMs ?? TIMEOUTS.eventMs, signal: options.signal },
      'delivery',
    );
    if (!raw.ok) return raw;
    const { status, headers, newConnection } = raw.answer;
    if (status >= 200 && status <= 299) return { ok: true, response: { status, headers, body: null, newConnection } };
    return this.statusFailure(raw.answer);
  }

  /**
   * Long-polls for a dispatch (PROTOCOL §8): null when there is nothing to do
   * (204 or an empty body), else the validated order.
   */
  async pollDispatch(waitSecs: number, options: CallOptions = {}): Promise<CpResult<DispatchOrder | null>> {
    const raw = await this.call('GET', `${PATH_DISPATCH}?wait=${waitSecs}`, undefined, {
      // The CP holds the poll up to `wait`; the deadline leaves it 10 s more.
      deadlineMs: options.deadlineMs ?? (waitSecs + 10) * 1000,
      signal: options.signal,
    });
    if (!raw.ok) return raw;
    const { status, headers, text, newConnection } = raw.answer;
    if (status === 204 || (status === 200 && text.trim() === '')) {
      return { ok: true, response: { status, headers, body: null, newConnection } };
    }
    if (status !== 200) return this.statusFailure(raw.answer);
    const parsed = parseJson(text);
    if (!parsed.ok) return { ok: false, failure: { kind: 'bad-body', detail: parsed.reason, status }, headers };
    const checked = validateWire(DispatchOrder, parsed.value);
    if (!checked.ok) {
      return { ok: false, failure: { kind: 'bad-body', detail: checked.problems.join('; '), status }, headers };
    }
    return { ok: true, response: { status, headers, body: checked.value, newConnection } };
  }

  /**
   * `GET /v1/rollouts/{id}` or `…/sig` (PROTOCOL §12): the body's exact
   * bytes on a 200, judged by the trust module, not here.
   */
  async fetchRolloutArtifact(rolloutId: string, artifact: RolloutArtifact, options: CallOptions = {}): Promise<CpResult<Buffer>> {
    const path = `${PATH_ROLLOUTS}${encodeURIComponent(rolloutId)}${artifact === 'signature' ? '/sig' : ''}`;
    const raw = await this.call('GET', path, undefined, {
      deadlineMs: options.deadlineMs ?? TIMEOUTS.defaultRequestMs,
      signal: options.signal,
      // A manifest lists every host of a rollout: a big fleet's outgrows the 1 MiB of the agent's own calls.
      maxBytes: MAX_ROLLOUT_ARTIFACT_BYTES,
    });
    if (!raw.ok) return raw;
    const { status, headers, bytes, newConnection } = raw.answer;
    if (status !== 200) return this.statusFailure(raw.answer);
    return { ok: true, response: { status, headers, body: bytes, newConnection } };
  }

  /** One request with the hard deadline; the answer's status is not judged here. */
  async call(
    method: 'GET' | 'POST',
    path: string,
    data: string | undefined,
    options: CallOptions,
    pool: CpPool = 'control',
  ): Promise<{ ok: true; answer: RawAnswer } | { ok: false; failure: CpFailure; headers: null }> {
    const deadlineMs = options.deadlineMs ?? TIMEOUTS.defaultRequestMs;
    // axios's `timeout` only limits idle time; a peer that dribbles bytes
    // would outlive it. The abort signal is a deadline for the whole call.
    const deadline = new CallDeadline(deadlineMs, options.signal);
    try {
      const res: AxiosResponse<Buffer> = await this.http.axiosRef.request({
        method,
        url: `${this.baseUrl}${path}`,
        data,
        headers: data === undefined ? NO_EXTRA_HEADERS : JSON_BODY_HEADERS,
        httpsAgent: pool === 'delivery' ? this.tls.delivery() : this.tls.current(),
        // axios's own idle timeout must not undercut a long-poll's deadline.
        timeout: deadlineMs,
        signal: deadline.signal,
        // Bytes, decoded here: a signature is binary, and text must be judged as sent.
        responseType: 'arraybuffer',
        ...(options.maxBytes === undefined ? {} : { maxContentLength: options.maxBytes }),
      });
      const bytes = Buffer.isBuffer(res.data) ? res.data : Buffer.from(res.data ?? '');
      // As axios's own text decoding did: a byte-order mark is no part of the JSON.
      const text = bytes.toString('utf8').replace(/^\uFEFF/, '');
      const newConnection = (res.request as ClientRequest | undefined)?.reusedSocket !== true;
      return { ok: true, answer: { status: res.status, headers: plainHeaders(res.headers), text, bytes, newConnection } };
    } catch (err) {
      const request = (err as { request?: ClientRequest }).request;
      const failure = classifyTransportError(err, {
        deadlineMs,
        deadlineHit: deadline.hit,
        reusedSocket: request?.reusedSocket === true,
        handshake: handshakeStageOf(request?.socket),
      });
      return { ok: false, failure, headers: null };
    } finally {
      deadline.dispose();
    }
  }

  statusFailure(answer: RawAnswer): { ok: false; failure: CpFailure; headers: Record<string, string> } {
    const rawRetryAfter = answer.headers['retry-after'];
    const failure: Extract<CpFailure, { kind: 'http-status' }> = {
      kind: 'http-status',
      status: answer.status,
      retryAfterSecs: null,
      detail: snippet(answer.text),
    };
    if (rawRetryAfter === undefined) return { ok: false, failure, headers: answer.headers };
    // Decided here, once, so that every caller honours the same statuses.
    if (!RETRY_AFTER_STATUSES.has(answer.status)) {
      failure.ignoredRetryAfter = snippet(rawRetryAfter, 40);
      return { ok: false, failure, headers: answer.headers };
    }
    failure.retryAfterSecs = parseRetryAfter(rawRetryAfter, this.clock.now());
    // A CP that means "wait" but says it wrongly should be told so, not silently overruled by the backoff.
    if (failure.retryAfterSecs === null) failure.unusableRetryAfter = snippet(rawRetryAfter, 40);
    return { ok: false, failure, headers: answer.headers };
  }
}

/**
 * A call's abort signal: its own deadline, or the caller's signal (shutdown).
 * One controller, one timer and one listener, all gone when the call ends:
 * `AbortSignal.any` over a signal that lives as long as a replay would hang
 * a dependant on it per call, kept until garbage collection.
 */
class CallDeadline {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  hit = false;

  constructor(
    deadlineMs: number,
    private readonly outer: AbortSignal | undefined,
  ) {
    // not a job: this one call's deadline, which must not keep the process alive
    this.timer = setTimeout(() => {
      this.hit = true;
      this.controller.abort();
    }, deadlineMs);
    this.timer.unref();
    if (outer?.aborted) this.controller.abort();
    else outer?.addEventListener('abort', this.onOuterAbort);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.outer?.removeEventListener('abort', this.onOuterAbort);
  }

  private readonly onOuterAbort = (): void => this.controller.abort();
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
function snippet(text: string, max = 200): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  if (flat === '') return 'no body';
  return flat.length > max ? `${flat.slice(0, max - 3)}...` : flat;
}
