import https from 'node:https';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { CONNECT_TIMEOUT_CODE } from './comms.constants';
import type { TlsIdentity } from './identity';

const handshaken = new WeakSet<object>();

/** Whether a socket made by a ConnectTimeoutAgent finished its TLS handshake (our side verified the CP). */
export function tlsHandshakeDone(socket: unknown): boolean {
  return typeof socket === 'object' && socket !== null && handshaken.has(socket);
}

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
      const err = Object.assign(new Error(`TLS connection not established within ${this.connectTimeoutMs} ms`), {
        code: CONNECT_TIMEOUT_CODE,
      });
      socket.destroy(err);
    }, this.connectTimeoutMs);
    timer.unref();
    const clear = (): void => clearTimeout(timer);
    socket.once('secureConnect', () => {
      handshaken.add(socket);
      clear();
    });
    socket.once('close', clear);
    return socket;
  }
}

export function buildTlsAgent(identity: TlsIdentity, connectTimeoutMs: number): ConnectTimeoutAgent {
  return new ConnectTimeoutAgent(
    {
      ca: identity.ca,
      cert: identity.client?.certPem,
      key: identity.client?.keyPem,
      keepAlive: true,
      maxSockets: 8,
      // Old TLS versions have no place on a fleet's control channel.
      minVersion: 'TLSv1.2',
    },
    connectTimeoutMs,
  );
}
