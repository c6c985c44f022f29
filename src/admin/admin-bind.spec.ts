import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bindAdmin } from '../agent.app';
import type { AdminHttpAdapter } from './admin-http';

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString('utf8')));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

describe('bindAdmin: the admin listener bound before the app exists', () => {
  let dir: string;
  const bound: AdminHttpAdapter[] = [];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-admin-bind-'));
  });
  afterEach(async () => {
    for (const adapter of bound.splice(0)) await adapter.close();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses a TCP address another socket holds, naming the address and what to do', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      expect(await bindAdmin({ kind: 'tcp', host: '127.0.0.1', port })).toEqual({
        ok: false,
        problem: `cannot listen on 127.0.0.1:${port}: the address is already in use (another agent, or another program, listens there); stop it, or give this agent another address`,
      });
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  it('refuses a unix path that is a file, not a socket, and leaves the file alone', async () => {
    const path = join(dir, 'not-a-socket');
    writeFileSync(path, 'keep me');
    expect(await bindAdmin({ kind: 'unix', path })).toEqual({
      ok: false,
      problem: `cannot listen on unix:${path}: ${path} exists and is not a socket; refusing to replace it`,
    });
    expect(readFileSync(path, 'utf8')).toBe('keep me');
  });

  it('holds requests that arrive before open() and answers them from the routes that exist then', async () => {
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));

    const result = await bindAdmin({ kind: 'tcp', host: '127.0.0.1', port });
    if (!result.ok) throw new Error(result.problem);
    bound.push(result.adapter);
    let answered = false;
    const early = get(port, '/ready').then((r) => {
      answered = true;
      return r;
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(answered).toBe(false);
    // What Nest's init does: the routes come after the listener.
    result.adapter
      .getInstance<{ get(path: string, h: (req: unknown, res: http.ServerResponse) => void): void }>()
      .get('/ready', (_req, res) => {
        res.end('routes are there');
      });
    result.adapter.open();
    expect(await early).toEqual({ status: 200, body: 'routes are there' });
    expect(await get(port, '/ready')).toEqual({ status: 200, body: 'routes are there' });
  });
});
