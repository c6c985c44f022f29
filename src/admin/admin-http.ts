import http, { type IncomingMessage, type ServerResponse } from 'node:http';
// The adapter's own file: the package's index also loads multer and busboy for file uploads (~40 files, 0.6 MB of
// heap), which a read-only listener never takes.
import { ExpressAdapter } from '@nestjs/platform-express/adapters/express-adapter';
import { enforceConnectionDeadlines } from './connection-deadlines';

/**
 * Limits of the admin listener's HTTP server. Its clients are curl, a
 * scraper and `nixfleet-agent status` on this host: they send a few hundred
 * bytes of headers at once. Anything slower or larger is a client holding
 * the listener, which any local user can open.
 */
export const ADMIN_SERVER_LIMITS = {
  /** Larger headers are answered 431 by Node itself (its default is 16 KiB). */
  maxHeaderSize: 8 * 1024,
  /** Whole headers within this, or 408 and the connection is closed. */
  headersTimeout: 5_000,
  /** The whole request within this (GET has no body; a body sent anyway is read and discarded). */
  requestTimeout: 10_000,
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeout: 5_000,
} as const;

/**
 * The longest period a Node timer takes: Node's own check of the two
 * timeouts above, a wake-up every period whether or not a connection is
 * open, then never runs; a timer per open connection enforces them instead.
 */
const NODE_CONNECTIONS_CHECK_MS = 2_147_483_647;

export const READ_ONLY_METHODS = ['GET', 'HEAD'] as const;

/**
 * The admin listener's HTTP adapter: Express as Nest uses it, on a server
 * with the limits above, read-only, and without `X-Powered-By`.
 */
export class AdminHttpAdapter extends ExpressAdapter {
  constructor() {
    super();
    const app = this.getInstance<{ disable(name: string): void; use(fn: typeof refuseWrites): void }>();
    app.disable('x-powered-by');
    // Before Nest's routes: every path answers the same for a method it never serves.
    app.use(refuseWrites);
  }

  /** Requests that came before `open()`, waiting for the app's routes. */
  private held: (() => void)[] | null = null;

  /** Idempotent: `bindAdmin` creates and binds the server before Nest asks for it. */
  override initHttpServer(): void {
    if (this.httpServer !== undefined) return;
    const server = http.createServer(
      { ...ADMIN_SERVER_LIMITS, connectionsCheckingInterval: NODE_CONNECTIONS_CHECK_MS },
      this.getInstance<http.RequestListener>(),
    );
    enforceConnectionDeadlines(server, ADMIN_SERVER_LIMITS);
    this.httpServer = server;
  }

  /**
   * Until `open()`, requests wait instead of meeting a 404: the listener is
   * bound before the app is built (a taken address must stop the agent
   * before any job runs), and the routes come with the app.
   */
  holdRequests(): void {
    this.held = [];
    this.getInstance<{ use(fn: (req: IncomingMessage, res: ServerResponse, next: () => void) => void): void }>().use((_req, _res, next) => {
      if (this.held === null) next();
      else this.held.push(next);
    });
  }

  open(): void {
    const held = this.held ?? [];
    this.held = null;
    for (const next of held) next();
  }
}

/** 405 for anything but GET and HEAD; the method is one Node's parser knew, so it is safe to name. */
function refuseWrites(req: IncomingMessage, res: ServerResponse, next: () => void): void {
  const method = req.method ?? '';
  if ((READ_ONLY_METHODS as readonly string[]).includes(method)) {
    next();
    return;
  }
  const body = JSON.stringify({
    statusCode: 405,
    error: 'Method Not Allowed',
    message: `the admin endpoint is read-only: ${method} is not served, only ${READ_ONLY_METHODS.join(' and ')}`,
  });
  res.writeHead(405, {
    Allow: READ_ONLY_METHODS.join(', '),
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}
