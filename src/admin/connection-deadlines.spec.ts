import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { enforceConnectionDeadlines } from './connection-deadlines';

const LIMITS = { headersTimeout: 300, requestTimeout: 600, keepAliveTimeout: 2_000 };

/** A raw connection: what it was sent back, and whether the server closed it. */
interface Raw {
  socket: net.Socket;
  text: () => string;
  closed: Promise<void>;
}

describe('enforceConnectionDeadlines: request timeouts by a timer per open connection, on a real server on loopback', () => {
  let server: http.Server;
  let port = 0;

  beforeEach(async () => {
    // Node's own check never runs in this test's life: whatever closes a slow client is the deadlines'.
    server = http.createServer({ ...LIMITS, connectionsCheckingInterval: 2_147_483_647 }, (req, res) => {
      // Reads the whole body, then answers: a dribbled body holds the request open.
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    enforceConnectionDeadlines(server, LIMITS);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterEach(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  function connect(): Promise<Raw> {
    return new Promise((resolve, reject) => {
      let text = '';
      const socket = net.connect({ host: '127.0.0.1', port }, () => resolve({ socket, text: () => text, closed }));
      const closed = new Promise<void>((done) => socket.on('close', () => done()));
      socket.on('data', (c: Buffer) => {
        text += c.toString('latin1');
      });
      socket.on('error', reject);
    });
  }

  it('answers 408 and closes a connection whose headers do not all come within headersTimeout (slowloris)', async () => {
    const c = await connect();
    c.socket.write('GET / HTTP/1.1\r\nHost: x\r\n');

    await c.closed;

    expect(c.text()).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
  });

  it('closes a request whose body is still dribbling at requestTimeout', async () => {
    const c = await connect();
    c.socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n');
    const dribble = setInterval(() => c.socket.write('a'), 50);

    await c.closed;
    clearInterval(dribble);

    expect(c.text()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('serves requests one after another on a keep-alive connection, each within its own deadline', async () => {
    const c = await connect();
    for (let i = 0; i < 3; i++) {
      const before = c.text().length;
      c.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      while (!c.text().slice(before).endsWith('ok')) await new Promise((resolve) => setTimeout(resolve, 10));
      // Longer than a request's own deadline in all: each request's clock started afresh.
      await new Promise((resolve) => setTimeout(resolve, 250));
    }

    expect(c.text().match(/HTTP\/1\.1 200 OK/g)).toHaveLength(3);
    expect(c.socket.destroyed).toBe(false);
    c.socket.destroy();
  });

  it('closes a keep-alive connection whose next request dribbles its headers', async () => {
    const c = await connect();
    c.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    while (!c.text().endsWith('ok')) await new Promise((resolve) => setTimeout(resolve, 10));
    // Node's keep-alive timer or the deadline (its idle time and headersTimeout), whichever ends it first.
    c.socket.write('GET / HTTP/1.1\r\nHost: x\r\n');

    await c.closed;

    // Something was already sent on this connection: closed without a 408, as Node does.
    expect(c.text().match(/^HTTP\/1\.1 /gm)).toHaveLength(1);
  });
});
