// class-transformer's @Type (used by the event envelope) reads design-time metadata.
import 'reflect-metadata';
import * as fs from 'node:fs';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import * as https from 'node:https';
import type * as net from 'node:net';
import type * as tls from 'node:tls';
import { type AgentEventKind, EventEnvelopeBody } from '../src/protocol/events.wire';
import { HeartbeatRequest } from '../src/protocol/heartbeat.wire';
import {
  HEADER_PROTOCOL,
  HEADER_REPLAY_FROM,
  PATH_DISPATCH,
  PATH_EVENTS,
  PATH_HEARTBEAT,
  PATH_ROLLOUTS,
  PROTOCOL_MAJOR,
} from '../src/protocol/protocol.constants';
import { formatReplayFrom } from '../src/protocol/replay-from';
import { validateWire } from '../src/protocol/validate';
import { DEFAULT_CLOCK_SKEW_SECS, isPlainRolloutId } from '../src/trust/manifest';
import type { HostTarget, ManifestSigner, SignedManifest } from './manifest-signer';
import type { Pki } from './pki';

/** `manifest` and `signature` are PROTOCOL §12's `GET /v1/rollouts/{id}` and `GET /v1/rollouts/{id}/sig`. */
export type CpRoute = 'heartbeat' | 'events' | 'dispatch' | 'manifest' | 'signature';

/**
 * What the CP serves for a rollout, good or each bad case of PROTOCOL §12. The
 * manifest is signed when a dispatch names a host (and signed again when
 * another host joins), with the CP's clock as `signedAt`; every variant names
 * the dispatched hosts unless it says otherwise. The agent's refusal reason is
 * in brackets.
 */
export const MANIFEST_VARIANTS = [
  /** Signed by the current key. */
  'good',
  /** Signed by the trust file's previous key (accepted). */
  'previous-key',
  /** The bytes changed after signing: the first host's target swapped [bad-signature]. */
  'tampered',
  /** Signed by a key the trust file does not name [bad-signature]. */
  'unknown-key',
  /** Signed just past the freshness window [stale]. */
  'stale',
  /** Signed further ahead of the CP's clock than the skew allowance [from-the-future]. */
  'future',
  /** Signed one second before the trust file's rejectBefore [signed-before-reject-before]. */
  'before-reject-before',
  /** The hostSet names another host only [not-for-this-host]. */
  'other-host',
  /** The dispatched hosts move to another closure [wrong-target]. */
  'wrong-target',
  /** Served under this id, signed for another rollout of the channel [wrong-rollout]. */
  'other-rollout',
  /** The manifest is served, `/sig` answers 404. */
  'no-signature',
  /** `/sig` answers 63 bytes [malformed-signature]. */
  'short-signature',
  /** Both routes answer 500. */
  'server-error',
  /** Both routes answer 404, as for a rollout the CP has no manifest for. */
  'missing',
] as const;
export type ManifestVariant = (typeof MANIFEST_VARIANTS)[number];

/** Exact bytes to serve for a rollout, whatever they say (a `SignedManifest` is one). */
export interface ManifestPair {
  bytes: Buffer;
  signature: Buffer;
}

/** The target the `wrong-target` variant names: a valid store basename nobody dispatched. */
export const OTHER_TARGET = '11111111111111111111111111111111-nixos-system-other';
/** The only host the `other-host` variant names. */
export const OTHER_HOST = 'someone-else';

export interface DevCpOptions {
  pki: Pick<Pki, 'caCertPath' | 'serverCertPath' | 'serverKeyPath'>;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (any free port). */
  port?: number;
  /** Caps the long-poll hold whatever `wait` asks, so tests need not wait 60 s. */
  dispatchWaitCapMs?: number;
  /**
   * When the CP answers heartbeats with an automatic Replay-From (PROTOCOL §7):
   * 'after-wipe' (default) only once loseAllState() ran; 'always' whenever a
   * heartbeat reports a seq the CP does not hold (a freshly started process
   * is a wiped CP too: the standalone entry uses this); 'never'.
   */
  autoReplayFrom?: 'after-wipe' | 'always' | 'never';
  /** Form of the automatic Replay-From value. Default 'plain'. */
  replayForm?: 'plain' | 'per-rollout';
  /** Request bodies above this are answered 413. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Source of the CP's wall time (received_at, enqueued_at, records, a manifest's signedAt). */
  now?: () => Date;
  /**
   * The fleet CI whose signed manifests the CP serves (PROTOCOL §12). Without
   * one the rollout routes answer 404, as a CP holding no manifest does.
   */
  signer?: ManifestSigner;
}

export interface ScriptedResponse {
  /**
   * With none of `status`, `body`, `bodyBytes` the CP computes its normal
   * answer (state changes included) and the other fields only shape it:
   * delay it, add headers, dribble it.
   */
  status?: number;
  headers?: Record<string, string>;
  /** JSON-serialised unless a string or Buffer (sent as is). */
  body?: unknown;
  /** Wait this long before handling the request; the CP still acts afterwards even if the client left. */
  delayMs?: number;
  /** Never answer; the socket stays open until close(). Nothing is processed. */
  stall?: boolean;
  /** Send the body one byte at a time at this pace (headers go out at once). */
  dribbleBytesEveryMs?: number;
  /** Send a JSON-ish body of exactly this many bytes (e.g. 2 MiB for a size cap). */
  bodyBytes?: number;
  /** Omit Content-Length, so the body goes out chunked and its size is undeclared. */
  chunked?: boolean;
  retryAfterSecs?: number;
  /** `Retry-After` in its HTTP-date form: this many seconds after the answer is written. */
  retryAfterDateInSecs?: number;
  /**
   * Cut the connection mid-response: the status line and headers (declaring
   * the whole body) go out, then only this many body bytes. A body-less answer
   * (a 204 to an event) is cut before its status line. The CP has acted by
   * then (an event is stored): the client just never hears so.
   */
  cutAfterBytes?: number;
}

export interface ReceivedRequest {
  /** null for a path the CP does not serve. */
  route: CpRoute | null;
  receivedAt: Date;
  method: string;
  url: string;
  /** From the client cert CN: bare, or `agent-<machineId>.<suffix>`. */
  machineId: string;
  cn: string;
  headers: IncomingHttpHeaders;
  /** The body as received (utf-8); '' when absent or refused for size. */
  raw: string;
  /** Parsed JSON; undefined when absent or not JSON. */
  body: unknown;
  /** null until answered; stays null when never answered (stall, client gone, a body-less answer cut). */
  status: number | null;
  /** Answered by a respondNext/setDefault script. */
  scripted: boolean;
  /** Events only: what the CP did with an accepted envelope. */
  outcome?: 'stored' | 'duplicate';
  /** The answer was cut off by a `cutAfterBytes` script. */
  cut?: true;
  /** Manifest and signature fetches: the rollout id named in the path, decoded. */
  rolloutId?: string;
}

/** An accepted event, as the CP holds it. */
export interface StoredEvent {
  hostname: string;
  rolloutId: string;
  seq: number;
  kind: AgentEventKind;
  /** The exact bytes of the envelope as posted. */
  raw: string;
  /** The envelope's `event`, as parsed JSON (only kind and seq are checked). */
  event: { kind: AgentEventKind; seq: number } & Record<string, unknown>;
  storedAt: Date;
}

export interface DispatchOrderInput {
  rollout_id: string;
  target_closure: string;
  soak_due_at: string;
  enqueued_at?: string;
}

interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

/** A route's default script and the share of its requests it answers. */
interface RouteDefault {
  script: ScriptedResponse;
  share: number;
  /** Requests that reached the scripts since it was set. */
  seen: number;
}

interface QueuedOrder {
  hostname: string;
  rollout_id: string;
  target_closure: string;
  soak_due_at: string;
  enqueued_at: string;
}

interface PollWaiter {
  deliver(order: QueuedOrder): void;
}

/** A rollout's manifest as the CP holds it: whom it was dispatched to, and what to serve. */
interface HeldRollout {
  hosts: HostTarget[];
  variant: ManifestVariant;
  /** Set by setManifest(id, pair): served as is, whatever was dispatched. */
  custom: ManifestPair | null;
  /** What the routes serve; null while no dispatch named a host (404). */
  served: SignedManifest | ManifestPair | null;
}

const DEFAULT_MAX_BODY = 1024 * 1024;
/** Past this a refused body is no longer drained: the connection is cut. */
const DRAIN_LIMIT = 16 * 1024 * 1024;
const NON_NEGATIVE_INT = /^(0|[1-9][0-9]*)$/;
const CANONICAL_CN = /^agent-([^.]+)\.[^.].*$/;

/**
 * A real mTLS HTTPS control plane on loopback, programmable by tests (PROTOCOL §1, §2, §6–§8, §12).
 * Per request: unknown path 404, wrong method 405, body over the limit 413; then a
 * one-shot script, else the route's default script, else the CP's own logic:
 * protocol header 400/426, no CN 403, non-JSON content type 415 (POST routes), invalid body 400,
 * hostname ≠ cert machine id 403, then the route. The rollout routes serve any fleet member:
 * a manifest names many hosts, and the agent, not the CP, checks that it names this one.
 */
export class DevControlPlane {
  /** Every request that reached the HTTP layer, in arrival order. */
  readonly requests: ReceivedRequest[] = [];
  readonly heartbeats: ReceivedRequest[] = [];
  /** Every events POST, duplicates and refused ones included. */
  readonly eventPosts: ReceivedRequest[] = [];
  readonly dispatchPolls: ReceivedRequest[] = [];
  /** `GET /v1/rollouts/{id}`, each with its `rolloutId`. */
  readonly manifestFetches: ReceivedRequest[] = [];
  /** `GET /v1/rollouts/{id}/sig`, each with its `rolloutId`. */
  readonly signatureFetches: ReceivedRequest[] = [];
  /** TLS handshakes the CP refused (untrusted client cert, no cert, ...). */
  readonly tlsRejections: { at: Date; reason: string }[] = [];
  /** TCP connections reset before any TLS byte, while setResetConnections(true) holds. */
  readonly resets: Date[] = [];

  private readonly server: https.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly closeHooks = new Set<() => void>();
  private signingNow: (() => Date) | null = null;
  private readonly scripts: Record<CpRoute, ScriptedResponse[]> = { heartbeat: [], events: [], dispatch: [], manifest: [], signature: [] };
  private readonly defaults: Record<CpRoute, RouteDefault | null> = {
    heartbeat: null,
    events: null,
    dispatch: null,
    manifest: null,
    signature: null,
  };
  /** By rollout id. Not lost by loseAllState(): the manifests are CI's artifacts, not the CP's records. */
  private readonly rollouts = new Map<string, HeldRollout>();
  private replayFromOverride: string | null = null;
  /** `${hostname}\0${rolloutId}` → seq → event. */
  private store = new Map<string, Map<number, StoredEvent>>();
  private dispatchQueues = new Map<string, QueuedOrder[]>();
  private waiters = new Map<string, PollWaiter[]>();
  private bootstrap = new Map<string, unknown[]>();
  private wiped = false;
  private resetConnections = false;
  private offline = false;
  private closed = false;
  private closing: Promise<void> | null = null;
  private url_ = '';
  private host = '';
  private port = 0;

  private constructor(private readonly opts: DevCpOptions) {
    this.server = https.createServer({
      key: fs.readFileSync(opts.pki.serverKeyPath),
      cert: fs.readFileSync(opts.pki.serverCertPath),
      ca: fs.readFileSync(opts.pki.caCertPath),
      requestCert: true,
      rejectUnauthorized: true,
    });
    this.server.on('connection', (socket: net.Socket) => {
      if (this.resetConnections) {
        // An RST where the client waits for the ServerHello: a middlebox or a CP process dying mid-accept.
        this.resets.push(this.now());
        socket.resetAndDestroy();
        return;
      }
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    this.server.on('tlsClientError', (err: Error) => {
      this.tlsRejections.push({ at: this.now(), reason: err.message });
    });
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.handle(req, res).catch((err: unknown) => {
        // A bug in the dev CP must show up in the test, not hang the client.
        if (!res.headersSent && !res.destroyed) {
          res.writeHead(500, { 'Content-Type': 'application/json' });
          res.end(JSON.stringify({ error: 'internal', message: String(err) }));
        } else {
          res.destroy();
        }
      });
    });
  }

  /** Starts listening; resolves once the port is bound. */
  static async start(opts: DevCpOptions): Promise<DevControlPlane> {
    const cp = new DevControlPlane(opts);
    const host = opts.host ?? '127.0.0.1';
    await new Promise<void>((resolve, reject) => {
      cp.server.once('error', reject);
      cp.server.listen(opts.port ?? 0, host, () => {
        cp.server.off('error', reject);
        resolve();
      });
    });
    const address = cp.server.address() as net.AddressInfo;
    cp.host = host;
    cp.port = address.port;
    cp.url_ = `https://${host.includes(':') ? `[${host}]` : host}:${address.port}`;
    return cp;
  }

  /**
   * The CP goes away as a crashed or restarting process does: the port stops
   * accepting (connects are refused) and every open connection is destroyed.
   * Its state stays, as a CP that restarts with its database keeps it.
   */
  async goOffline(): Promise<void> {
    if (this.offline || this.closed) return;
    this.offline = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  /** Listens again on the same host and port, with the state it had. */
  async comeBackOnline(): Promise<void> {
    if (!this.offline || this.closed) return;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, this.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.offline = false;
  }

  /** While on, every new TCP connection is reset before the TLS handshake (see `resets`). */
  setResetConnections(on: boolean): void {
    this.resetConnections = on;
  }

  /** `https://<host>:<port>`, no trailing slash. */
  get url(): string {
    return this.url_;
  }

  /** Stops the server and destroys every open socket (held polls and stalls too); clears all timers. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const hook of [...this.closeHooks]) hook();
    this.closeHooks.clear();
    this.closing = new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const socket of this.sockets) socket.destroy();
    });
    return this.closing;
  }

  // ---- observation ----

  /** Accepted, deduplicated events; by seq within a rollout, rollouts in the order first stored. */
  events(hostname: string, rolloutId?: string): StoredEvent[] {
    const out: StoredEvent[] = [];
    for (const held of this.store.values()) {
      const any = held.values().next();
      if (any.done) continue;
      const first = any.value;
      if (first.hostname !== hostname || (rolloutId !== undefined && first.rolloutId !== rolloutId)) continue;
      out.push(...[...held.values()].sort((a, b) => a.seq - b.seq));
    }
    return out;
  }

  /** The last seq the CP holds without a gap from 1 for (hostname, rollout): what Replay-From names. */
  heldSeq(hostname: string, rolloutId: string): number {
    const held = this.store.get(storeKey(hostname, rolloutId));
    let seq = 0;
    while (held?.has(seq + 1)) seq++;
    return seq;
  }

  /** Long-polls currently held for this machine. */
  heldPolls(hostname: string): number {
    return this.waiters.get(hostname)?.length ?? 0;
  }

  /** Orders queued for this machine and not yet handed out. */
  queuedDispatches(hostname: string): number {
    return this.dispatchQueues.get(hostname)?.length ?? 0;
  }

  /** Polls every 10 ms until the probe returns something truthy; rejects with `what` on timeout or close(). */
  waitFor<T>(probe: () => T | undefined | null | false, timeoutMs = 5000, what?: string): Promise<T> {
    const started = Date.now();
    return new Promise<T>((resolve, reject) => {
      const onClose = (): void => reject(new Error(`waitFor(${what ?? probe.toString()}): control plane closed`));
      this.closeHooks.add(onClose);
      const settle = (fn: () => void): void => {
        this.closeHooks.delete(onClose);
        fn();
      };
      const tick = (): void => {
        let value: T | undefined | null | false;
        try {
          value = probe();
        } catch (err) {
          settle(() => reject(err instanceof Error ? err : new Error(String(err))));
          return;
        }
        if (value) {
          const found = value;
          settle(() => resolve(found));
        } else if (Date.now() - started >= timeoutMs) {
          settle(() => reject(new Error(`waitFor timed out after ${timeoutMs} ms: ${what ?? probe.toString()}`)));
        } else {
          this.setTimer(tick, 10);
        }
      };
      tick();
    });
  }

  // ---- programming ----

  /** Answers the next request on `route` with `r` (FIFO, one-shot); 404/405/413 do not consume it. */
  respondNext(route: CpRoute, r: ScriptedResponse): void {
    this.scripts[route].push(r);
  }

  /**
   * Answers every request on `route` with `r` while no one-shot is queued; null restores normal behaviour.
   * With `share` (0 < share ≤ 1), only that share of them, spread evenly and the same in every run:
   * 0.5 scripts the 2nd, 4th, 6th… request, the others get the CP's own answer (a CP shedding load).
   */
  setDefault(route: CpRoute, r: ScriptedResponse | null, options: { share?: number } = {}): void {
    const share = options.share ?? 1;
    if (!(share > 0 && share <= 1)) throw new Error(`setDefault: share must be in (0, 1], got ${share}`);
    this.defaults[route] = r === null ? null : { script: r, share, seen: 0 };
  }

  /** Sends this exact `X-Nixfleet-Replay-From` value on every heartbeat answer (overrides the automatic one); null = none. */
  setReplayFrom(raw: string | null): void {
    this.replayFromOverride = raw;
  }

  /** Snapshots returned as `bootstrap_rollouts` to this host's heartbeats that carry no rollout_id; not validated. */
  setBootstrap(hostname: string, snapshots: unknown[]): void {
    this.bootstrap.set(hostname, snapshots);
  }

  /**
   * Hands an order to a held long-poll of this host at once, or queues it for the next poll; not validated.
   * With a signer, the rollout's manifest then names this host with the order's target (signed again
   * now if that changed it), served as setManifest last said (`good` unless told otherwise).
   * A rollout id that is not `<channel>@<channelRef>` without "/" gets no manifest (404).
   */
  queueDispatch(hostname: string, order: DispatchOrderInput): void {
    this.holdManifestFor(hostname, order.rollout_id, order.target_closure);
    const full: QueuedOrder = {
      hostname,
      rollout_id: order.rollout_id,
      target_closure: order.target_closure,
      soak_due_at: order.soak_due_at,
      enqueued_at: order.enqueued_at ?? this.now().toISOString(),
    };
    const waiter = this.waiters.get(hostname)?.shift();
    if (waiter) waiter.deliver(full);
    else this.dispatchQueues.set(hostname, [...(this.dispatchQueues.get(hostname) ?? []), full]);
  }

  /**
   * What the CP serves for this rollout from now on: a variant of the manifest
   * its dispatches make (signed again now if a host is known), or exact bytes
   * and signature. Needs a signer.
   */
  setManifest(rolloutId: string, served: ManifestVariant | ManifestPair): void {
    const signer = this.signerOrThrow();
    // Refused here, not at the next queueDispatch, which must not throw.
    if (served === 'previous-key' && signer.keys.previous === null) throw new Error('the signer has no previous key');
    if (served === 'before-reject-before' && signer.rejectBefore === null) throw new Error('the signer was made without rejectBefore');
    const held = this.heldRollout(rolloutId);
    if (typeof served === 'string') {
      held.variant = served;
      held.custom = null;
    } else {
      held.custom = { bytes: Buffer.from(served.bytes), signature: Buffer.from(served.signature) };
    }
    this.sign(rolloutId, held);
  }

  /**
   * The fleet CI's clock for a manifest's signedAt, from now on, when it is not
   * the CP's: an agent on a test's fake clock judges freshness by that clock.
   */
  signWithClock(now: () => Date): void {
    this.signingNow = now;
  }

  /** What the rollout routes serve for this id (as signed, or as tampered); null when they answer 404 for want of one. */
  manifest(rolloutId: string): SignedManifest | ManifestPair | null {
    return this.rollouts.get(rolloutId)?.served ?? null;
  }

  /**
   * As if the CP restarted without its database: stored events, dispatch
   * queue and bootstrap records are gone. Observation logs, scripts and the
   * Replay-From override stay (they belong to the test, not the CP).
   */
  loseAllState(): void {
    this.store = new Map();
    this.dispatchQueues = new Map();
    this.bootstrap = new Map();
    this.wiped = true;
  }

  // ---- request handling ----

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader(HEADER_PROTOCOL, String(PROTOCOL_MAJOR));
    const cn = peerCn(req);
    const url = new URL(req.url ?? '/', 'https://cp.invalid');
    const { route, rolloutId } = routeOf(url.pathname);
    const rec: ReceivedRequest = {
      route,
      receivedAt: this.now(),
      method: req.method ?? '',
      url: req.url ?? '',
      machineId: machineIdFromCn(cn),
      cn,
      headers: req.headers,
      raw: '',
      body: undefined,
      status: null,
      scripted: false,
      ...(rolloutId !== undefined ? { rolloutId } : {}),
    };
    this.requests.push(rec);
    if (route === null) {
      req.resume();
      this.write(res, rec, error(404, 'not_found', `no route for ${req.method} ${url.pathname}`));
      return;
    }
    this.logOf(route).push(rec);
    const method = methodOf(route);
    if (req.method !== method) {
      req.resume();
      this.write(res, rec, { ...error(405, 'method_not_allowed', `${url.pathname} takes ${method}`), headers: { Allow: method } });
      return;
    }
    const body = await this.readBody(req);
    if (body === 'aborted') return;
    if (body === 'too-large') {
      this.write(res, rec, error(413, 'payload_too_large', `body exceeds ${this.maxBodyBytes()} bytes`));
      return;
    }
    rec.raw = body.toString('utf8');
    rec.body = parseJson(rec.raw);

    const script = this.scripts[route].shift() ?? this.defaultScript(route);
    rec.scripted = script !== undefined;
    if (script?.stall) return;
    if (script?.delayMs) await this.sleep(script.delayMs);
    if (this.closed) return;

    let answer: Answer | null;
    if (script && replacesAnswer(script)) {
      answer = { status: script.status ?? 200, body: script.bodyBytes !== undefined ? padBody(script.bodyBytes) : script.body };
    } else {
      answer = await this.answer(route, rec, url, res);
    }
    if (answer === null || this.closed) return;
    if (script) {
      const headers = { ...answer.headers };
      if (script.retryAfterSecs !== undefined) headers['Retry-After'] = String(script.retryAfterSecs);
      if (script.retryAfterDateInSecs !== undefined) {
        headers['Retry-After'] = new Date(this.now().getTime() + script.retryAfterDateInSecs * 1000).toUTCString();
      }
      answer = { ...answer, headers: { ...headers, ...script.headers } };
    }
    this.write(res, rec, answer, script);
  }

  /** The CP's own behaviour; null when there is no one left to answer (client gone, CP closed). */
  private async answer(route: CpRoute, rec: ReceivedRequest, url: URL, res: ServerResponse): Promise<Answer | null> {
    const protocol = rec.headers[HEADER_PROTOCOL.toLowerCase()];
    if (typeof protocol !== 'string' || !NON_NEGATIVE_INT.test(protocol)) {
      return error(
        400,
        'bad_protocol_header',
        `${HEADER_PROTOCOL} must be a non-negative integer, got ${JSON.stringify(protocol ?? null)}`,
      );
    }
    if (Number(protocol) !== PROTOCOL_MAJOR) {
      return error(426, 'protocol_mismatch', `this CP speaks protocol ${PROTOCOL_MAJOR}, not ${protocol}`);
    }
    if (rec.machineId === '') return error(403, 'no_identity', 'the client certificate carries no usable CN');
    if (methodOf(route) === 'POST' && !isJson(rec.headers['content-type'])) {
      // Like a typical JSON extractor (e.g. axum's `Json`): a body without the JSON media type is refused.
      return error(
        415,
        'unsupported_media_type',
        `Content-Type must be application/json, got ${JSON.stringify(rec.headers['content-type'] ?? null)}`,
      );
    }
    switch (route) {
      case 'heartbeat':
        return this.heartbeat(rec);
      case 'events':
        return this.event(rec);
      case 'dispatch':
        return this.dispatch(rec, url, res);
      case 'manifest':
      case 'signature':
        return this.rolloutArtifact(route, rec.rolloutId ?? '');
      default: {
        const never: never = route;
        return never;
      }
    }
  }

  private heartbeat(rec: ReceivedRequest): Answer {
    const checked = validateWire(HeartbeatRequest, rec.body);
    if (!checked.ok) return error(400, 'invalid_heartbeat', checked.problems.join('; '), checked.problems);
    const hb = checked.value;
    const seqs = hb.last_event_seq_by_rollout ?? {};
    const badSeqs = Object.entries(seqs)
      .filter(([, v]) => typeof v !== 'number' || !Number.isInteger(v) || v < 0)
      .map(([k]) => `last_event_seq_by_rollout.${k}: must be an integer >= 0`);
    if (badSeqs.length > 0) return error(400, 'invalid_heartbeat', badSeqs.join('; '), badSeqs);
    if (hb.hostname !== rec.machineId) {
      return error(403, 'hostname_mismatch', `hostname ${hb.hostname} does not match the certificate's machine id ${rec.machineId}`);
    }
    const headers: Record<string, string> = {};
    const replayFrom = this.replayFromFor(hb.hostname, seqs);
    if (replayFrom !== null) headers[HEADER_REPLAY_FROM] = replayFrom;
    return {
      status: 200,
      headers,
      body: {
        received_at: this.now().toISOString(),
        // Upstream fills these only for the boot-recovery shape (no rollout_id).
        bootstrap_rollouts: hb.rollout_id === undefined ? (this.bootstrap.get(hb.hostname) ?? []) : [],
      },
    };
  }

  private replayFromFor(hostname: string, reported: Record<string, number>): string | null {
    if (this.replayFromOverride !== null) return this.replayFromOverride;
    const mode = this.opts.autoReplayFrom ?? 'after-wipe';
    switch (mode) {
      case 'never':
        return null;
      case 'after-wipe':
        if (!this.wiped) return null;
        break;
      case 'always':
        break;
      default: {
        const never: never = mode;
        return never;
      }
    }
    const lagging = Object.entries(reported)
      .map(([rolloutId, seq]) => ({ rolloutId, reportedSeq: seq, fromSeq: this.heldSeq(hostname, rolloutId) }))
      .filter((r) => r.reportedSeq > r.fromSeq);
    if (lagging.length === 0) return null;
    const form = this.opts.replayForm ?? 'plain';
    switch (form) {
      case 'plain': {
        // The plain form names no rollout; the agent applies it to its most recent one, likely the highest seq.
        const newest = lagging.reduce((a, b) => (b.reportedSeq > a.reportedSeq ? b : a));
        return formatReplayFrom({ form: 'plain', fromSeq: newest.fromSeq });
      }
      case 'per-rollout':
        return formatReplayFrom({
          form: 'per-rollout',
          entries: lagging.map(({ rolloutId, fromSeq }) => ({ rolloutId, fromSeq })),
        });
      default: {
        const never: never = form;
        return never;
      }
    }
  }

  private event(rec: ReceivedRequest): Answer {
    const checked = validateWire(EventEnvelopeBody, rec.body);
    if (!checked.ok) return error(400, 'invalid_event', checked.problems.join('; '), checked.problems);
    const envelope = checked.value;
    if (envelope.hostname !== rec.machineId) {
      return error(403, 'hostname_mismatch', `hostname ${envelope.hostname} does not match the certificate's machine id ${rec.machineId}`);
    }
    const key = storeKey(envelope.hostname, envelope.rolloutId);
    const held = this.store.get(key) ?? new Map<number, StoredEvent>();
    this.store.set(key, held);
    const { seq, kind } = envelope.event;
    if (held.has(seq)) {
      rec.outcome = 'duplicate';
      return { status: 204 };
    }
    held.set(seq, {
      hostname: envelope.hostname,
      rolloutId: envelope.rolloutId,
      seq,
      kind,
      raw: rec.raw,
      event: (rec.body as { event: StoredEvent['event'] }).event,
      storedAt: this.now(),
    });
    rec.outcome = 'stored';
    return { status: 204 };
  }

  private async dispatch(rec: ReceivedRequest, url: URL, res: ServerResponse): Promise<Answer | null> {
    const wait = url.searchParams.get('wait');
    if (wait !== null && !NON_NEGATIVE_INT.test(wait)) {
      return error(400, 'bad_wait', `wait must be a whole number of seconds, got ${JSON.stringify(wait)}`);
    }
    const queued = this.dispatchQueues.get(rec.machineId)?.shift();
    if (queued) return { status: 200, body: queued };
    const holdMs = Math.min(Number(wait ?? 0) * 1000, this.opts.dispatchWaitCapMs ?? Number.POSITIVE_INFINITY);
    if (holdMs <= 0) return { status: 204 };
    const got = await this.holdPoll(rec.machineId, holdMs, res);
    switch (got) {
      case 'timeout':
        return { status: 204 };
      case 'gone':
        return null;
      default:
        return { status: 200, body: got };
    }
  }

  private holdPoll(hostname: string, holdMs: number, res: ServerResponse): Promise<QueuedOrder | 'timeout' | 'gone'> {
    return new Promise((resolve) => {
      const finish = (outcome: QueuedOrder | 'timeout' | 'gone'): void => {
        clearTimeout(timer);
        this.timers.delete(timer);
        res.off('close', onGone);
        this.closeHooks.delete(onGone);
        const list = this.waiters.get(hostname);
        const at = list?.indexOf(waiter) ?? -1;
        if (list && at >= 0) list.splice(at, 1);
        resolve(outcome);
      };
      // A client that left must not swallow an order meant for the next poll.
      const onGone = (): void => finish('gone');
      const waiter: PollWaiter = { deliver: (order) => finish(order) };
      const timer = this.setTimer(() => finish('timeout'), holdMs);
      res.on('close', onGone);
      this.closeHooks.add(onGone);
      this.waiters.set(hostname, [...(this.waiters.get(hostname) ?? []), waiter]);
    });
  }

  /** PROTOCOL §12: the manifest as signed (JSON), or its raw signature (octet-stream), served to any fleet member. */
  private rolloutArtifact(route: 'manifest' | 'signature', rolloutId: string): Answer {
    if (!this.opts.signer) return error(404, 'no_manifest', `this control plane holds no signed manifests (rollout ${rolloutId})`);
    const held = this.rollouts.get(rolloutId);
    const served = held?.served ?? null;
    if (!held || served === null || (held.custom === null && held.variant === 'missing')) {
      return error(404, 'no_manifest', `no manifest for rollout ${rolloutId}`);
    }
    if (held.custom === null && held.variant === 'server-error') {
      return error(500, 'internal', `the manifest store failed for rollout ${rolloutId}`);
    }
    if (route === 'manifest') return { status: 200, headers: { 'Content-Type': 'application/json' }, body: served.bytes };
    let signature = served.signature;
    if (held.custom === null) {
      if (held.variant === 'no-signature') return error(404, 'no_signature', `no signature for rollout ${rolloutId}`);
      if (held.variant === 'short-signature') signature = signature.subarray(0, signature.length - 1);
    }
    return { status: 200, headers: { 'Content-Type': 'application/octet-stream' }, body: signature };
  }

  private holdManifestFor(hostname: string, rolloutId: string, targetClosure: string): void {
    if (!this.opts.signer || !isSignableRolloutId(rolloutId)) return;
    const held = this.heldRollout(rolloutId);
    const known = held.hosts.find((h) => h.hostname === hostname);
    if (known?.targetClosure === targetClosure && held.served !== null) return;
    held.hosts = [...held.hosts.filter((h) => h.hostname !== hostname), { hostname, targetClosure }];
    this.sign(rolloutId, held);
  }

  private heldRollout(rolloutId: string): HeldRollout {
    let held = this.rollouts.get(rolloutId);
    if (!held) {
      held = { hosts: [], variant: 'good', custom: null, served: null };
      this.rollouts.set(rolloutId, held);
    }
    return held;
  }

  /** Makes `served` from the held hosts and variant, as the fleet CI would sign it now. */
  private sign(rolloutId: string, held: HeldRollout): void {
    const signer = this.signerOrThrow();
    if (held.custom !== null) {
      held.served = held.custom;
      return;
    }
    if (held.hosts.length === 0 || !isSignableRolloutId(rolloutId)) {
      held.served = null;
      return;
    }
    const now = this.signingNow?.() ?? this.now();
    const input = { rolloutId, hosts: held.hosts, signedAt: now };
    const variant = held.variant;
    switch (variant) {
      case 'good':
      case 'no-signature':
      case 'short-signature':
      case 'server-error':
      case 'missing':
        held.served = signer.sign(input);
        return;
      case 'previous-key':
        held.served = signer.sign(input, 'previous');
        return;
      case 'tampered':
        held.served = signer.tampered(signer.sign(input));
        return;
      case 'unknown-key':
        held.served = signer.signedByUnknownKey(input);
        return;
      case 'stale':
        held.served = signer.stale(input, now);
        return;
      case 'future':
        held.served = signer.sign({ ...input, signedAt: new Date(now.getTime() + (DEFAULT_CLOCK_SKEW_SECS + 60) * 1000) });
        return;
      case 'before-reject-before':
        held.served = signer.beforeRejectBefore(input);
        return;
      case 'other-host':
        held.served = signer.sign({ ...input, hosts: [{ hostname: OTHER_HOST, targetClosure: held.hosts[0].targetClosure }] });
        return;
      case 'wrong-target':
        held.served = signer.sign({ ...input, hosts: held.hosts.map((h) => ({ ...h, targetClosure: OTHER_TARGET })) });
        return;
      case 'other-rollout':
        held.served = signer.sign({ ...input, rolloutId: `${rolloutId}-other` });
        return;
      default: {
        const never: never = variant;
        return never;
      }
    }
  }

  private signerOrThrow(): ManifestSigner {
    if (!this.opts.signer) throw new Error('this control plane was started without a signer (DevControlPlane.start({ signer }))');
    return this.opts.signer;
  }

  private write(res: ServerResponse, rec: ReceivedRequest, answer: Answer, script?: ScriptedResponse): void {
    if (res.destroyed || res.writableEnded) return;
    const payload = encodeBody(answer.body);
    if (payload !== null) res.setHeader('Content-Type', 'application/json');
    for (const [name, value] of Object.entries(answer.headers ?? {})) res.setHeader(name, value);
    const cut = script?.cutAfterBytes;
    if (cut !== undefined) rec.cut = true;
    if (cut !== undefined && (payload === null || answer.status === 204 || answer.status === 304)) {
      res.destroy();
      return;
    }
    rec.status = answer.status;
    if (payload === null || answer.status === 204 || answer.status === 304) {
      res.writeHead(answer.status);
      res.end();
      return;
    }
    if (!script?.chunked) res.setHeader('Content-Length', payload.length);
    if (cut !== undefined) {
      res.writeHead(answer.status);
      res.flushHeaders();
      // The partial body must reach the wire before the connection goes.
      res.write(payload.subarray(0, cut), () => res.destroy());
      return;
    }
    const pace = script?.dribbleBytesEveryMs;
    if (pace === undefined) {
      res.writeHead(answer.status);
      res.end(payload);
      return;
    }
    res.writeHead(answer.status);
    res.flushHeaders();
    let at = 0;
    const drip = (): void => {
      if (res.destroyed) return;
      if (at >= payload.length) {
        res.end();
        return;
      }
      res.write(payload.subarray(at, at + 1));
      at++;
      this.setTimer(drip, pace);
    };
    this.setTimer(drip, pace);
  }

  /** The body as a Buffer, or a marker when it is too large or the client left. */
  private readBody(req: IncomingMessage): Promise<Buffer | 'too-large' | 'aborted'> {
    const limit = this.maxBodyBytes();
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let received = 0;
      let tooLarge = Number(req.headers['content-length'] ?? 0) > limit;
      let done = false;
      const settle = (v: Buffer | 'too-large' | 'aborted'): void => {
        if (done) return;
        done = true;
        resolve(v);
      };
      req.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received > limit) tooLarge = true;
        if (!tooLarge) chunks.push(chunk);
        // Drain a refused body so the client reads the 413 rather than a reset, up to a point.
        if (received > DRAIN_LIMIT) {
          req.destroy();
          settle('aborted');
        }
      });
      req.on('end', () => settle(tooLarge ? 'too-large' : Buffer.concat(chunks)));
      req.on('close', () => settle('aborted'));
      req.on('error', () => settle('aborted'));
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        this.closeHooks.delete(wake);
        resolve();
      };
      this.closeHooks.add(wake);
      this.setTimer(wake, ms);
    });
  }

  private setTimer(fn: () => void, ms: number): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
    return timer;
  }

  /** The route's default script for this request, if its share says this one gets it. */
  private defaultScript(route: CpRoute): ScriptedResponse | undefined {
    const d = this.defaults[route];
    if (d === null) return undefined;
    d.seen += 1;
    // The n-th request is scripted when n × share crosses a whole number: an even spread, no randomness.
    return Math.floor(d.seen * d.share) > Math.floor((d.seen - 1) * d.share) ? d.script : undefined;
  }

  private logOf(route: CpRoute): ReceivedRequest[] {
    switch (route) {
      case 'heartbeat':
        return this.heartbeats;
      case 'events':
        return this.eventPosts;
      case 'dispatch':
        return this.dispatchPolls;
      case 'manifest':
        return this.manifestFetches;
      case 'signature':
        return this.signatureFetches;
      default: {
        const never: never = route;
        return never;
      }
    }
  }

  private maxBodyBytes(): number {
    return this.opts.maxBodyBytes ?? DEFAULT_MAX_BODY;
  }

  private now(): Date {
    return this.opts.now?.() ?? new Date();
  }
}

/** PROTOCOL §1: the CN is the bare machine id or `agent-<machineId>.<suffix>`. */
export function machineIdFromCn(cn: string): string {
  return CANONICAL_CN.exec(cn)?.[1] ?? cn;
}

function peerCn(req: IncomingMessage): string {
  const cn: unknown = (req.socket as tls.TLSSocket).getPeerCertificate().subject?.CN;
  // Several CNs make the identity ambiguous: treat as none.
  return typeof cn === 'string' ? cn : '';
}

function routeOf(pathname: string): { route: CpRoute | null; rolloutId?: string } {
  switch (pathname) {
    case PATH_HEARTBEAT:
      return { route: 'heartbeat' };
    case PATH_EVENTS:
      return { route: 'events' };
    case PATH_DISPATCH:
      return { route: 'dispatch' };
    default:
      return rolloutRouteOf(pathname);
  }
}

/** `/v1/rollouts/{id}` and `/v1/rollouts/{id}/sig`, the id one percent-encoded segment. */
function rolloutRouteOf(pathname: string): { route: CpRoute | null; rolloutId?: string } {
  if (!pathname.startsWith(PATH_ROLLOUTS)) return { route: null };
  const [segment, sig, ...rest] = pathname.slice(PATH_ROLLOUTS.length).split('/');
  if (segment === '' || rest.length > 0 || (sig !== undefined && sig !== 'sig')) return { route: null };
  let rolloutId: string;
  try {
    rolloutId = decodeURIComponent(segment);
  } catch {
    return { route: null };
  }
  return { route: sig === undefined ? 'manifest' : 'signature', rolloutId };
}

function methodOf(route: CpRoute): 'GET' | 'POST' {
  switch (route) {
    case 'heartbeat':
    case 'events':
      return 'POST';
    case 'dispatch':
    case 'manifest':
    case 'signature':
      return 'GET';
    default: {
      const never: never = route;
      return never;
    }
  }
}

/** What the signer can make a manifest for: `<channel>@<channelRef>`, usable in a path. */
function isSignableRolloutId(rolloutId: string): boolean {
  return isPlainRolloutId(rolloutId) && rolloutId.indexOf('@') > 0 && rolloutId.indexOf('@') < rolloutId.length - 1;
}

function storeKey(hostname: string, rolloutId: string): string {
  return `${hostname}\0${rolloutId}`;
}

function replacesAnswer(s: ScriptedResponse): boolean {
  return s.status !== undefined || s.body !== undefined || s.bodyBytes !== undefined;
}

function error(status: number, code: string, message: string, problems?: string[]): Answer {
  return { status, body: problems ? { error: code, message, problems } : { error: code, message } };
}

function isJson(contentType: string | undefined): boolean {
  return contentType !== undefined && /^application\/json\s*(;|$)/i.test(contentType);
}

function parseJson(raw: string): unknown {
  if (raw === '') return undefined;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return undefined;
  }
}

function encodeBody(body: unknown): Buffer | null {
  if (body === undefined) return null;
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  return Buffer.from(JSON.stringify(body), 'utf8');
}

/** `{"pad":"xxx…"}` of exactly `bytes` bytes (spaces below the minimum JSON size). */
function padBody(bytes: number): Buffer {
  const frame = '{"pad":""}'.length;
  if (bytes < frame) return Buffer.alloc(bytes, ' ');
  return Buffer.from(`{"pad":"${'x'.repeat(bytes - frame)}"}`, 'utf8');
}
