import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { type Json, tcpConnect } from '../support/admin-http';
import { makeWorld, type World } from '../support/agent-harness';
import { testArgs } from '../support/agent-config';
import { NOT_STARTED } from '../../src/config/config.messages';
import { runCli } from '../support/agent-cli';
import {
  exitWithin,
  killIfRunning,
  logLines,
  type RunningAgent,
  startAdminAgent,
  startAgent,
  worldAgentArgs,
} from '../support/agent-process';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/**
 * One request on a keep-alive connection, as curl makes it. (With
 * `Connection: close` a server that answers before reading a big body
 * closes with unread bytes, and the kernel may reset the client before it
 * reads the answer.) A body goes with an explicit Content-Length: Node
 * frames no body of a GET otherwise.
 */
function request(port: number, method: string, path: string, body?: Buffer, headers: http.OutgoingHttpHeaders = {}): Promise<Answer> {
  const agent = new http.Agent({ keepAlive: true });
  const framing = body === undefined ? {} : { 'content-length': body.length };
  return new Promise<Answer>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, headers: { ...framing, ...headers }, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  }).finally(() => agent.destroy());
}

/** Writes raw bytes and collects whatever the server sends until it closes the connection. */
function raw(port: number, bytes: string | Buffer, opts: { end?: boolean } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      if (opts.end === false) socket.write(bytes);
      else socket.end(bytes);
    });
    let text = '';
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1');
    });
    // A reset after the server's answer (it closes while we still send) still leaves the answer readable.
    socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? undefined : reject(err)));
    socket.on('close', () => resolve(text));
  });
}

/** Local addresses of the sockets listening on `port`, from the kernel's own tables (hex in /proc/net/tcp{,6}). */
function listeningAddresses(port: number): string[] {
  const found: string[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(file, 'utf8').trim().split('\n').slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/);
      const [addrHex, portHex] = local.split(':');
      // 0A: TCP_LISTEN.
      if (state !== '0A' || parseInt(portHex, 16) !== port) continue;
      found.push(
        addrHex.length === 8
          ? (addrHex.match(/../g) ?? [])
              .reverse()
              .map((b) => parseInt(b, 16))
              .join('.')
          : `ipv6:${addrHex}`,
      );
    }
  }
  return found;
}

async function untilPortFree(port: number): Promise<void> {
  for (let i = 0; ; i++) {
    if ((await tcpConnect('127.0.0.1', port)) === 'ECONNREFUSED') return;
    if (i >= 300) throw new Error(`port ${port} stayed busy; another agent (or test) holds the default admin port`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** What a bad client must never cause: a stack trace, an error line, or Nest's/Express's exception handler speaking. */
function expectNoTraceOfClients(agent: RunningAgent): void {
  const text = agent.output();
  expect(text).not.toMatch(/\n\s+at \S/);
  const lines = logLines(agent);
  expect(lines.filter((l) => l.stack !== undefined)).toEqual([]);
  expect(lines.filter((l) => l.level === 'error' || l.level === 'fatal')).toEqual([]);
  expect(lines.filter((l) => l.context === 'ExceptionsHandler' || l.context === 'AdminHttp')).toEqual([]);
  expect(text.split('\n').filter((l) => l !== '' && !l.startsWith('{'))).toEqual([]);
}

describe('faults at the admin edge: the built agent, bad local clients', () => {
  let world: World;
  let agent: RunningAgent;
  let port: number;
  let pid: number | undefined;

  beforeAll(async () => {
    world = await makeWorld();
    ({ agent, port } = await startAdminAgent(world, { stateDir: join(world.dir, 'state') }));
    pid = agent.child.pid;
  });
  afterAll(async () => {
    await killIfRunning(agent);
    await world.close();
  });

  /** The agent is the same process and still answers /status after each fault. */
  async function expectStillServing(): Promise<void> {
    expect(agent.child.exitCode).toBeNull();
    expect(agent.child.signalCode).toBeNull();
    const r = await request(port, 'GET', '/status');
    expect(r.status).toBe(200);
    expect((JSON.parse(r.body) as Json).pid).toBe(pid);
    expectNoTraceOfClients(agent);
  }

  it('answers POST, PUT, PATCH, DELETE and OPTIONS with a short 405 JSON naming GET and HEAD, on known and unknown paths', async () => {
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
      for (const path of ['/status', '/metrics', '/no-such-thing']) {
        const r = await request(port, method, path, Buffer.from('{"state":"Converged"}'), { 'content-type': 'application/json' });
        expect({ method, path, status: r.status, allow: r.headers.allow }).toEqual({ method, path, status: 405, allow: 'GET, HEAD' });
        expect(r.headers['content-type']).toMatch(/^application\/json/);
        expect(JSON.parse(r.body)).toEqual({
          statusCode: 405,
          error: 'Method Not Allowed',
          message: `the admin endpoint is read-only: ${method} is not served, only GET and HEAD`,
        });
      }
    }
    await expectStillServing();
  });

  it('keeps the 404 JSON for an unknown path, also for malformed percent-encoding', async () => {
    for (const path of ['/nope', '/%', '/status/%zz', '/%E0%A4%A']) {
      const r = await request(port, 'GET', path);
      expect({ path, status: r.status }).toEqual({ path, status: 404 });
      expect(JSON.parse(r.body)).toMatchObject({ statusCode: 404, error: 'Not Found' });
    }
    await expectStillServing();
  });

  it('sends no X-Powered-By on any answer, and serves HEAD', async () => {
    const answers = await Promise.all([
      request(port, 'GET', '/status'),
      request(port, 'HEAD', '/status'),
      request(port, 'GET', '/metrics'),
      request(port, 'GET', '/nope'),
      request(port, 'POST', '/status'),
    ]);
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 404, 405]);
    for (const a of answers) expect(a.headers['x-powered-by']).toBeUndefined();
    expect(answers[1].body).toBe('');
  });

  it('refuses a 1 MiB body POSTed to /status and ignores one sent with a GET: nothing is parsed', async () => {
    const big = Buffer.from(`{"pad":"${'a'.repeat(1024 * 1024)}"}`);
    const post = await request(port, 'POST', '/status', big, { 'content-type': 'application/json' });
    expect(post.status).toBe(405);
    const get = await request(port, 'GET', '/status', big, { 'content-type': 'application/json' });
    expect(get.status).toBe(200);
    expect((JSON.parse(get.body) as Json).machineId).toBe(world.pki.machineId);
    // Malformed JSON is not a parse error either: no body parser runs.
    const malformed = await request(port, 'POST', '/status', Buffer.from('{"unterminated'), { 'content-type': 'application/json' });
    expect(malformed.status).toBe(405);
    await expectStillServing();
  });

  it('refuses a 64 KiB header with 431 and closes that connection', async () => {
    const answer = await raw(port, `GET /status HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 431 /);
    await expectStillServing();
  });

  it('answers a request line Node cannot parse (bad method, garbage) with 400, logging nothing', async () => {
    expect(await raw(port, 'BREW /status HTTP/1.1\r\nHost: x\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /);
    expect(await raw(port, '\x00\x01\x02 garbage\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /);
    await expectStillServing();
  });

  it('closes a connection that dribbles its headers (slowloris) with 408, while /status keeps answering', async () => {
    const slow = raw(port, 'GET /status HTTP/1.1\r\nHost: x\r\n', { end: false });
    // The listener is not held: others are served meanwhile.
    const meanwhile = await request(port, 'GET', '/status');
    expect(meanwhile.status).toBe(200);
    expect(await slow).toMatch(/^HTTP\/1\.1 408 /);
    await expectStillServing();
  });

  it('is found by `status` the same ways the agent takes its settings: --admin-listen, the env, a --config file by flag or env', async () => {
    const file = join(world.dir, 'status-settings.json');
    // The agent's settings file as a unit would hold it; `status` reads only where the agent listens.
    writeFileSync(file, JSON.stringify({ adminListen: `127.0.0.1:${port}`, controlPlaneUrl: 'https://cp.example', machineId: 'other' }));
    const ways: [string[], Record<string, string>][] = [
      [['--admin-listen', `127.0.0.1:${port}`], {}],
      [[], { NIXFLEET_AGENT_ADMIN_LISTEN: `127.0.0.1:${port}` }],
      [['--config', file], {}],
      [[], { NIXFLEET_AGENT_CONFIG: file }],
    ];
    for (const [args, env] of ways) {
      const r = await runCli(['status', '--json', ...args], env);
      expect({ args, env, stderr: r.stderr, pid: (JSON.parse(r.stdout) as Json).pid }).toEqual({ args, env, stderr: '', pid });
      expect([0, 1]).toContain(r.code);
    }
  });

  it('still stops cleanly after all of it', async () => {
    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
    expectNoTraceOfClients(agent);
  });
});

describe('faults at the admin edge: the default listener is on loopback only', () => {
  let world: World;
  let agent: RunningAgent | null = null;

  beforeAll(async () => {
    world = await makeWorld();
  });
  afterAll(async () => {
    await killIfRunning(agent);
    await world.close();
  });

  it('listens on 127.0.0.1:9850 when --admin-listen is not set, and not on any other address of this host', async () => {
    await untilPortFree(9850);
    agent = startAgent(
      testArgs({
        pki: world.pki,
        controlPlaneUrl: world.cp.url,
        stateDir: join(world.dir, 'state'),
        currentSystemPath: world.currentSystemPath,
      }),
    );
    await agent.waitForOutput(/status at 127\.0\.0\.1:9850\/status/);
    expect(listeningAddresses(9850)).toEqual(['127.0.0.1']);
    expect(await tcpConnect('127.0.0.1', 9850)).toBe('connected');
    const others = Object.values(networkInterfaces())
      .flat()
      .filter((i) => i !== undefined && !i.internal)
      .map((i) => i?.address ?? '')
      // A link-local IPv6 address needs a scope id to be dialled at all.
      .filter((a) => !a.toLowerCase().startsWith('fe80:'));
    for (const address of others) expect({ address, result: await tcpConnect(address, 9850) }).toEqual({ address, result: 'ECONNREFUSED' });

    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
  });
});

describe('faults at the admin edge: the admin address is already taken', () => {
  let world: World;
  let blocker: net.Server;
  let port: number;

  beforeAll(async () => {
    world = await makeWorld();
    blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    port = (blocker.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((resolve) => blocker.close(resolve));
    await world.close();
  });

  it('exits 2 with one line naming --admin-listen and the address, before any job ran: no log line, no heartbeat', async () => {
    const agent = startAgent(worldAgentArgs(world, { stateDir: join(world.dir, 'state'), adminListen: `127.0.0.1:${port}` }));
    try {
      expect(await exitWithin(agent, 15_000)).toBe(2);
    } finally {
      await killIfRunning(agent);
    }
    expect(
      agent
        .output()
        .split('\n')
        .filter((l) => l !== ''),
    ).toEqual([
      `config error: --admin-listen (env NIXFLEET_AGENT_ADMIN_LISTEN, file key "adminListen"): cannot listen on 127.0.0.1:${port}: the address is already in use (another agent, or another program, listens there); stop it, or give this agent another address`,
      NOT_STARTED,
    ]);
    expect(world.cp.requests).toEqual([]);
  });
});
