import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { BadRequestException, Controller, Get, type INestApplication, Module } from '@nestjs/common';
import { APP_FILTER, NestFactory } from '@nestjs/core';
import { CapturingLogger } from '../../test/support/agent-harness';
import { AdminExceptionFilter } from './admin-exception.filter';
import { AdminHttpAdapter } from './admin-http';

/** What an http-errors error from Express's own parsing looks like: an Error with a 4xx status. */
class ClientFault extends Error {
  readonly status = 400;
  readonly statusCode = 400;
}

@Controller()
class FaultyController {
  @Get('bug')
  bug(): never {
    throw new TypeError("Cannot read properties of undefined (reading 'rollouts')");
  }

  @Get('client-fault')
  clientFault(): never {
    throw new ClientFault('malformed input in /home/agent/secret-path');
  }

  @Get('refused')
  refused(): never {
    throw new BadRequestException({ error: 'refused', why: 'a reason for the client' });
  }

  @Get('ok')
  ok(): { ok: true } {
    return { ok: true };
  }
}

@Module({ controllers: [FaultyController], providers: [{ provide: APP_FILTER, useClass: AdminExceptionFilter }] })
class FaultyModule {}

function get(port: number, path: string, method = 'GET'): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the admin edge (AdminHttpAdapter + AdminExceptionFilter) over real HTTP on loopback', () => {
  let app: INestApplication;
  let logs: CapturingLogger;
  let port: number;

  beforeAll(async () => {
    logs = new CapturingLogger();
    app = await NestFactory.create(FaultyModule, new AdminHttpAdapter(), { logger: logs, bodyParser: false, abortOnError: false });
    await app.listen(0, '127.0.0.1');
    port = ((app.getHttpServer() as http.Server).address() as AddressInfo).port;
  });
  afterAll(async () => {
    await app.close();
  });
  beforeEach(() => logs.entries.splice(0));

  const errorsAndWarnings = (): string[] => logs.entries.filter((e) => e.level === 'error' || e.level === 'warn').map((e) => e.message);

  it('answers an unexpected failure with a bare 500 and logs one warning line without a stack', async () => {
    const r = await get(port, '/bug?x=1');
    expect(r.status).toBe(500);
    expect(JSON.parse(r.body)).toEqual({ statusCode: 500, message: 'Internal server error' });
    expect(r.body).not.toContain('rollouts');
    expect(errorsAndWarnings()).toEqual([
      "GET /bug?x=1 failed: TypeError: Cannot read properties of undefined (reading 'rollouts'); answered 500, the agent goes on",
    ]);
    expect(logs.entries.filter((e) => e.level === 'warn').map((e) => e.context)).toEqual(['AdminHttp']);
    expect(JSON.stringify(logs.entries)).not.toMatch(/\n\s+at /);
  });

  it('answers a 4xx error raised by request parsing quietly, without its message', async () => {
    const r = await get(port, '/client-fault');
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body)).toEqual({ statusCode: 400, message: 'Bad Request' });
    expect(errorsAndWarnings()).toEqual([]);
  });

  it("passes an HttpException's own answer through and logs nothing", async () => {
    const r = await get(port, '/refused');
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body)).toEqual({ error: 'refused', why: 'a reason for the client' });
    expect(errorsAndWarnings()).toEqual([]);
  });

  it('keeps the 404 JSON for an unknown path and 405 with Allow for any other method, never naming Express', async () => {
    const missing = await get(port, '/nope');
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.body)).toEqual({ statusCode: 404, error: 'Not Found', message: 'Cannot GET /nope' });
    const post = await get(port, '/ok', 'POST');
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
    expect(JSON.parse(post.body)).toEqual({
      statusCode: 405,
      error: 'Method Not Allowed',
      message: 'the admin endpoint is read-only: POST is not served, only GET and HEAD',
    });
    const ok = await get(port, '/ok');
    expect(ok.status).toBe(200);
    for (const r of [missing, post, ok]) expect(r.headers['x-powered-by']).toBeUndefined();
    expect(errorsAndWarnings()).toEqual([]);
  });

  it('serves HEAD for a GET route', async () => {
    const head = await get(port, '/ok', 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
  });
});
