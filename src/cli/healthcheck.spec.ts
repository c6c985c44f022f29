import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DEFAULT_CONFIG_PATH } from '../config/config.constants';
import { DEFAULT_ADMIN_LISTEN } from '../config/settings';
import { HEALTHCHECK_DEFAULT_ADMIN_LISTEN, healthcheckTarget, runHealthcheck } from './healthcheck';

const noFile = (path: string): string => {
  throw Object.assign(new Error(`ENOENT: no such file or directory, open '${path}'`), { code: 'ENOENT' });
};

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('no error');
}

describe('the container HEALTHCHECK: where it finds the admin endpoint', () => {
  it("defaults to the agent's own default address", () => {
    expect(HEALTHCHECK_DEFAULT_ADMIN_LISTEN).toBe(DEFAULT_ADMIN_LISTEN);
    expect(healthcheckTarget({}, noFile)).toEqual({
      ok: true,
      address: { kind: 'tcp', host: '127.0.0.1', port: 9850 },
      from: 'the default',
    });
  });

  it('asks a wildcard address on loopback, inside the container', () => {
    expect(healthcheckTarget({ NIXFLEET_AGENT_ADMIN_LISTEN: '0.0.0.0:9900' }, noFile)).toMatchObject({
      ok: true,
      address: { kind: 'tcp', host: '127.0.0.1', port: 9900 },
    });
    expect(healthcheckTarget({ NIXFLEET_AGENT_ADMIN_LISTEN: '[::]:9900' }, noFile)).toMatchObject({
      address: { kind: 'tcp', host: '::1', port: 9900 },
    });
    expect(healthcheckTarget({ NIXFLEET_AGENT_ADMIN_LISTEN: 'unix:/run/nfa/admin.sock' }, noFile)).toMatchObject({
      address: { kind: 'unix', path: '/run/nfa/admin.sock' },
    });
  });

  it('takes the environment over the config file, and the file over the default, as the agent does', () => {
    const file = (): string => JSON.stringify({ adminListen: '127.0.0.1:9999' });
    expect(healthcheckTarget({ NIXFLEET_AGENT_CONFIG: '/etc/nfa.json' }, file)).toEqual({
      ok: true,
      address: { kind: 'tcp', host: '127.0.0.1', port: 9999 },
      from: '/etc/nfa.json key "adminListen"',
    });
    expect(
      healthcheckTarget({ NIXFLEET_AGENT_CONFIG: '/etc/nfa.json', NIXFLEET_AGENT_ADMIN_LISTEN: '127.0.0.1:9998' }, file),
    ).toMatchObject({
      address: { port: 9998 },
      from: 'env NIXFLEET_AGENT_ADMIN_LISTEN',
    });
    // Without NIXFLEET_AGENT_CONFIG, the agent's default settings file, when it exists.
    const atDefault = (path: string): string => (path === DEFAULT_CONFIG_PATH ? file() : noFile(path));
    expect(healthcheckTarget({}, atDefault)).toEqual({
      ok: true,
      address: { kind: 'tcp', host: '127.0.0.1', port: 9999 },
      from: `${DEFAULT_CONFIG_PATH} key "adminListen"`,
    });
    // A file without the key leaves the default.
    expect(healthcheckTarget({ NIXFLEET_AGENT_CONFIG: '/etc/nfa.json' }, () => '{"machineId":"web-01"}')).toMatchObject({
      address: { port: 9850 },
      from: 'the default',
    });
    // NIXFLEET_AGENT_CONFIG set and empty: no settings file, not even the default one, as the agent reads it.
    expect(healthcheckTarget({ NIXFLEET_AGENT_CONFIG: '' }, atDefault)).toEqual({
      ok: true,
      address: { kind: 'tcp', host: '127.0.0.1', port: 9850 },
      from: 'the default',
    });
  });

  it('says in one line what is wrong with an address or a config file it cannot use', () => {
    expect(healthcheckTarget({ NIXFLEET_AGENT_ADMIN_LISTEN: 'localhost' }, noFile)).toEqual({
      ok: false,
      reason: 'admin address "localhost" from env NIXFLEET_AGENT_ADMIN_LISTEN must be HOST:PORT, [IPv6]:PORT or unix:/path',
    });
    expect(healthcheckTarget({ NIXFLEET_AGENT_CONFIG: '/etc/nfa.json' }, noFile)).toEqual({
      ok: false,
      reason:
        "cannot read the admin address from /etc/nfa.json (env NIXFLEET_AGENT_CONFIG): ENOENT: no such file or directory, open '/etc/nfa.json'",
    });
    // The default file is optional, but one that is there must be readable JSON.
    expect(healthcheckTarget({}, () => '{"adminListen":')).toEqual({
      ok: false,
      reason: `cannot read the admin address from ${DEFAULT_CONFIG_PATH}: ${errorOf(() => JSON.parse('{"adminListen":'))}`,
    });
  });
});

describe('the container HEALTHCHECK against a real HTTP listener', () => {
  let server: Server;
  let answer: { status: number; body: unknown };
  let port: number;

  beforeAll(async () => {
    server = createServer((req, res) => {
      const found = req.url === '/healthz';
      res.writeHead(found ? answer.status : 404, { 'content-type': 'application/json' }).end(JSON.stringify(found ? answer.body : {}));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('exits 0 when /healthz answers 200', async () => {
    answer = { status: 200, body: { status: 'ok', checks: [] } };
    expect(await runHealthcheck({ NIXFLEET_AGENT_ADMIN_LISTEN: `0.0.0.0:${port}` })).toEqual({
      code: 0,
      line: `nixfleet-agent healthcheck: 127.0.0.1:${port}/healthz ok`,
    });
  });

  it('exits 1 naming the failing checks when /healthz answers 503', async () => {
    answer = { status: 503, body: { status: 'stuck', failing: ['heartbeat: overdue by 40 s'] } };
    expect(await runHealthcheck({ NIXFLEET_AGENT_ADMIN_LISTEN: `127.0.0.1:${port}` })).toEqual({
      code: 1,
      line: `nixfleet-agent healthcheck: 127.0.0.1:${port}/healthz answered 503: heartbeat: overdue by 40 s`,
    });
  });

  it('exits 1 (never 2, which Docker reserves) when nothing answers', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const r = await runHealthcheck({ NIXFLEET_AGENT_ADMIN_LISTEN: `127.0.0.1:${deadPort}` });
    expect(r.code).toBe(1);
    expect(r.line).toMatch(
      new RegExp(
        `^nixfleet-agent healthcheck: no answer from 127\\.0\\.0\\.1:${deadPort}/healthz \\(.*ECONNREFUSED.*; address from env NIXFLEET_AGENT_ADMIN_LISTEN\\)$`,
      ),
    );
  });
});
