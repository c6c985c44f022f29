import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export interface ConnectionLimits {
  /** Whole headers within this of the connection (or of the previous answer's end), or 408 and the connection closes. */
  readonly headersTimeout: number;
  /** The whole request (headers, any body, the answer) within this, or the connection closes. */
  readonly requestTimeout: number;
  /** Node closes a connection idle this long after an answer; a next request's headers then have headersTimeout more. */
  readonly keepAliveTimeout: number;
}

/** What Node itself answers when one of its request timeouts ends a connection. */
const REQUEST_TIMEOUT_RESPONSE = 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n';

/**
 * Node enforces `headersTimeout` and `requestTimeout` with one interval per
 * server (`connectionsCheckingInterval`) that wakes the process whether or
 * not a connection is open: a second of latency meant a wake-up a second for
 * an admin listener that is idle nearly always. Here each open connection
 * has one timer for its current deadline, and an idle listener has none.
 *
 * Node's own check is left with the longest period a timer takes, and
 * these deadlines are a little stricter than its: the headers' clock starts
 * when the connection opens (or an answer ends), not at the request's first
 * byte, and a keep-alive connection that starts a request after its idle
 * time gets `keepAliveTimeout + headersTimeout` from the previous answer's end.
 */
export function enforceConnectionDeadlines(server: Server, limits: ConnectionLimits): void {
  const connections = new WeakMap<Socket, ConnectionDeadline>();
  server.on('connection', (socket: Socket) => {
    const deadline = new ConnectionDeadline(socket);
    connections.set(socket, deadline);
    deadline.arm(limits.headersTimeout);
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const deadline = connections.get(req.socket);
    if (deadline === undefined) return;
    deadline.requestStarted(limits.requestTimeout);
    res.once('close', () => deadline.answerEnded(limits.keepAliveTimeout + limits.headersTimeout));
  });
}

class ConnectionDeadline {
  private timer: NodeJS.Timeout | null = null;
  /** Requests whose answer has not ended (pipelined requests may overlap). */
  private open = 0;
  private phaseStartMs = performance.now();

  constructor(private readonly socket: Socket) {
    socket.once('close', () => this.clear());
  }

  arm(ms: number): void {
    this.clear();
    if (this.socket.destroyed) return;
    this.timer = setTimeout(() => this.expire(), Math.max(0, ms));
    // A client's deadline never keeps the process alive.
    this.timer.unref();
  }

  /** Headers are in: the request as a whole has `requestTimeout` from when this phase began. */
  requestStarted(requestTimeout: number): void {
    this.open += 1;
    this.arm(requestTimeout - (performance.now() - this.phaseStartMs));
  }

  /** The answer is out (or the request was abandoned): the next request's headers get `ms`. */
  answerEnded(ms: number): void {
    this.open = Math.max(0, this.open - 1);
    if (this.open > 0) return;
    this.phaseStartMs = performance.now();
    this.arm(ms);
  }

  private expire(): void {
    this.timer = null;
    const socket = this.socket;
    if (socket.destroyed) return;
    // As Node does: the 408 only when nothing was sent on this connection yet.
    if (socket.writable && socket.bytesWritten === 0) socket.write(REQUEST_TIMEOUT_RESPONSE);
    socket.destroy();
  }

  private clear(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
