import { getEventListeners } from 'node:events';
import net from 'node:net';
import { freePort } from '../../../dev/free-port';
import type { TcpProbeSpec } from '../probe.types';
import { runTcpProbe } from './tcp.probe';

function spec(over: Partial<TcpProbeSpec>): TcpProbeSpec {
  return { kind: 'tcp', host: '127.0.0.1', port: 1, connectTimeoutMs: 5_000, ...over };
}

/** A name lookup that never answers: a black-holed resolver. Loopback here completes every connect, so this is how a connect hangs. */
const neverAnswers: net.LookupFunction = () => undefined;

describe('runTcpProbe', () => {
  const signal = new AbortController().signal;

  it('passes when the port accepts, and closes the connection at once without sending a byte', async () => {
    const received: Buffer[] = [];
    let closed = false;
    const server = net.createServer((socket) => {
      socket.on('data', (chunk) => received.push(chunk));
      socket.on('close', () => (closed = true));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as net.AddressInfo;
      expect(await runTcpProbe(spec({ port }), signal)).toEqual({ status: 'pass', durationMs: expect.any(Number) });
      for (let i = 0; i < 250 && !closed; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(closed).toBe(true);
      expect(received).toEqual([]);
    } finally {
      server.close();
    }
  });

  it('fails with "refused" when nothing listens on the port, leaving no listener on the signal', async () => {
    const port = await freePort();
    const controller = new AbortController();
    expect(await runTcpProbe(spec({ port }), controller.signal)).toEqual({
      status: 'fail',
      failureReason: `connect to 127.0.0.1:${port} refused (ECONNREFUSED)`,
      durationMs: expect.any(Number),
    });
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('fails at the connect timeout, which counts the name lookup', async () => {
    const outcome = await runTcpProbe(spec({ host: 'db.internal', port: 5432, connectTimeoutMs: 300 }), signal, { lookup: neverAnswers });
    expect(outcome).toMatchObject({ status: 'fail', failureReason: 'connect to db.internal:5432 timed out after 300 ms' });
    expect(outcome.durationMs).toBeGreaterThanOrEqual(290);
    expect(outcome.durationMs).toBeLessThan(5_000);
  });

  it('names a failed lookup', async () => {
    const notFound: net.LookupFunction = (hostname, _options, callback) =>
      callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), '', 4);
    expect(await runTcpProbe(spec({ host: 'nowhere.internal', port: 80 }), signal, { lookup: notFound })).toMatchObject({
      status: 'fail',
      failureReason: 'connect to nowhere.internal:80 host not found (ENOTFOUND)',
    });
  });

  it('writes an IPv6 address in brackets', async () => {
    const port = await freePort();
    const outcome = await runTcpProbe(spec({ host: '::1', port }), signal);
    expect(outcome.failureReason).toMatch(new RegExp(`^connect to \\[::1\\]:${port} `));
  });

  it('resolves promptly as cancelled when its signal aborts during the connect', async () => {
    const controller = new AbortController();
    const running = runTcpProbe(spec({ host: 'db.internal', connectTimeoutMs: 60_000 }), controller.signal, { lookup: neverAnswers });
    setTimeout(() => controller.abort(), 50);
    const outcome = await running;
    expect(outcome).toMatchObject({ status: 'fail', failureReason: 'cancelled' });
    expect(outcome.durationMs).toBeLessThan(5_000);
  });
});
