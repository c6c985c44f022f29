import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import axios from 'axios';
import { reasonLength } from '../failure-reason';
import { MAX_FAILURE_REASON_CHARS } from '../probe.types';
import { systemCaAgent } from './http.probe';
import { runProbeCheck, type ProbeKindDeps } from './index';

describe('runProbeCheck', () => {
  let dir: string;
  let server: http.Server;
  let port: number;
  let deps: ProbeKindDeps;
  const signal = new AbortController().signal;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-probe-check-'));
    server = http.createServer((_req, res) => res.writeHead(204).end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
    const systemctl = join(dir, 'systemctl');
    writeFileSync(systemctl, '#!/bin/sh\necho "foo.service loaded failed failed Foo"\n', { mode: 0o755 });
    deps = { axios: axios.create(), httpsAgent: await systemCaAgent({}), systemctl, killGraceMs: 200 };
  });
  afterAll(async () => {
    deps.httpsAgent.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs each kind of spec with its own probe', async () => {
    const results = await Promise.all([
      runProbeCheck({ kind: 'http', url: `http://127.0.0.1:${port}/`, expectStatus: 204, timeoutMs: 2_000 }, signal, deps),
      runProbeCheck({ kind: 'tcp', host: '127.0.0.1', port, connectTimeoutMs: 2_000 }, signal, deps),
      runProbeCheck({ kind: 'exec', command: ['/bin/sh', '-c', 'exit 0'], timeoutMs: 2_000 }, signal, deps),
      runProbeCheck({ kind: 'systemd-failed-units', max: 0, timeoutMs: 2_000 }, signal, deps),
    ]);
    expect(results.map((r) => r.status)).toEqual(['pass', 'pass', 'pass', 'fail']);
    expect(results[3].failureReason).toBe('1 failed unit, at most 0 allowed: foo.service');
  });

  it('fails an invalid declaration with its problem line, at once', async () => {
    const problem = 'health-checks file /x/h.json, probe "db", field "port": is required; the probe counts as a failing enforce probe';
    expect(await runProbeCheck({ kind: 'invalid', declaredKind: 'tcp', problem }, signal, deps)).toEqual({
      status: 'fail',
      failureReason: problem,
      durationMs: 0,
    });
  });

  it('caps the problem of an invalid declaration at 512 characters', async () => {
    const problem = `health-checks file /x/h.json: ${'🦀é'.repeat(400)}`;
    const outcome = await runProbeCheck({ kind: 'invalid', declaredKind: 'invalid', problem }, signal, deps);
    expect(reasonLength(outcome.failureReason ?? '')).toBe(MAX_FAILURE_REASON_CHARS);
    expect(outcome.failureReason?.endsWith('…')).toBe(true);
  });

  it('turns a URL no request can be made of into a failure, never a rejection', async () => {
    const outcome = await runProbeCheck({ kind: 'http', url: 'not a url', expectStatus: 200, timeoutMs: 1_000 }, signal, deps);
    expect(outcome.status).toBe('fail');
    expect(outcome.failureReason).toMatch(/^GET not a url /);
  });
});
