import https from 'node:https';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { CONNECT_TIMEOUT_CODE } from './comms.constants';
import type { TlsIdentity } from './identity';

/**
 * An https.Agent whose connections must be up (TCP + TLS handshake) within
 * `connectTimeoutMs`. Node's agent has no connect timeout of its own, and the
 * per-call deadline alone would let a black-holed SYN eat a whole call budget
 * without saying that the connect was the problem.
 */
export class ConnectTimeoutAgent extends https.Agent {
  constructor(
    options: https.AgentOptions,
    private readonly connectTimeoutMs: number,
  ) {
    super(options);
  }

  override createConnection(...args: Parameters<https.Agent['createConnection']>): Duplex {
    const socket = super.createConnection(...args) as TLSSocket;
    const timer = setTimeout(() => {
      // not a job: this one connection's deadline
      const err = Object.assign(new Error(`TLS connection not established within ${this.connectTimeoutMs} ms`), {
        code: CONNECT_TIMEOUT_CODE,
      });
      socket.destroy(err);
    }, this.connectTimeoutMs);
    timer.unref();
    const clear = (): void => clearTimeout(timer);
    socket.once('secureConnect', clear);
    socket.once('close', clear);
    trackHandshake(socket);
    return socket;
  }
}

/**
 * How far a new connection's TLS handshake got: our hello sent; the
 * server's certificate received (its first flight processed); or complete
 * on our side. A reset means something different at each stage.
 */
export type HandshakeStage = 'hello-sent' | 'server-certificate' | 'complete';

const stages = new WeakMap<object, HandshakeStage>();

/** The stage a socket made by ConnectTimeoutAgent reached; null for any other socket. */
export function handshakeStageOf(socket: unknown): HandshakeStage | null {
  return typeof socket === 'object' && socket !== null ? (stages.get(socket) ?? null) : null;
}

// OpenSSL derives these secrets only once the server's first flight,
// certificate included, has been read: CLIENT_RANDOM after ServerHelloDone
// (TLS 1.2), SERVER_TRAFFIC_SECRET_0 after the server's Finished (TLS 1.3).
// Node has no other signal before the handshake completes.
const AFTER_SERVER_CERTIFICATE = [Buffer.from('CLIENT_RANDOM '), Buffer.from('SERVER_TRAFFIC_SECRET_0 ')];

function trackHandshake(socket: TLSSocket): void {
  stages.set(socket, 'hello-sent');
  // Only the label is looked at; the key material in the line is dropped at once, never kept or logged.
  const onKeylog = (line: Buffer): void => {
    if (AFTER_SERVER_CERTIFICATE.some((label) => line.subarray(0, label.length).equals(label))) {
      stages.set(socket, 'server-certificate');
      socket.off('keylog', onKeylog);
    }
  };
  socket.on('keylog', onKeylog);
  socket.once('secureConnect', () => {
    socket.off('keylog', onKeylog);
    stages.set(socket, 'complete');
  });
}

/**
 * `maxSockets` bounds the connections to the CP this agent may hold at once;
 * a request beyond it waits in the agent for a free one.
 */
export function buildTlsAgent(identity: TlsIdentity, connectTimeoutMs: number, maxSockets = 8): ConnectTimeoutAgent {
  return new ConnectTimeoutAgent(
    {
      ca: identity.ca,
      cert: identity.client?.certPem,
      key: identity.client?.keyPem,
      keepAlive: true,
      maxSockets,
      // Old TLS versions have no place on a fleet's control channel.
      minVersion: 'TLSv1.2',
    },
    connectTimeoutMs,
  );
}
