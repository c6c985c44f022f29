// The floor a Node agent could reach: a bare mTLS heartbeat loop that compare.bench.ts runs beside the built
// agent. Node's own modules only (no Nest, no axios, nothing of src/), one keep-alive https.Agent with the
// client cert, the heartbeat body the agent sends (PROTOCOL §2) every `intervalSecs`, and the dispatch long-poll
// the agent holds (PROTOCOL §8), so that both do the same network work; answers are read and parsed. It prints
// nothing unless a request fails.
// Usage: node bare-heartbeat.js '<BareConfig as JSON>'
import { readFileSync } from 'node:fs';
import { readlink } from 'node:fs/promises';
import { Agent, request } from 'node:https';
import { basename } from 'node:path';

export interface BareConfig {
  controlPlaneUrl: string;
  caCertPath: string;
  certPath: string;
  keyPath: string;
  machineId: string;
  currentSystemPath: string;
  intervalSecs: number;
  dispatchWaitSecs: number;
  protocolHeader: string;
  protocolMajor: number;
  heartbeatPath: string;
  dispatchPath: string;
  agentVersion: string;
}

if (process.argv[2] === undefined) {
  process.stderr.write("usage: node bare-heartbeat.js '<config JSON>' (compare.bench.ts starts it)\n");
  process.exit(2);
}
const config = JSON.parse(process.argv[2]) as BareConfig;
const agent = new Agent({
  keepAlive: true,
  ca: readFileSync(config.caCertPath),
  cert: readFileSync(config.certPath),
  key: readFileSync(config.keyPath),
});
const startedMs = performance.now();

/** One request; resolves with the status and body once read. Errors resolve too: the loop goes on. */
function call(
  method: 'GET' | 'POST',
  path: string,
  body: string | null,
  timeoutMs: number,
): Promise<{ status: number; text: string } | Error> {
  return new Promise((resolve) => {
    const req = request(
      `${config.controlPlaneUrl}${path}`,
      {
        method,
        agent,
        timeout: timeoutMs,
        headers: {
          [config.protocolHeader]: String(config.protocolMajor),
          ...(body === null ? {} : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.once('error', resolve);
      },
    );
    req.once('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`)));
    req.once('error', resolve);
    req.end(body ?? undefined);
  });
}

/** The answer's JSON when the status is the expected one; else one line on stderr and null. */
function answer(what: string, outcome: { status: number; text: string } | Error, expected: number): unknown {
  if (outcome instanceof Error) process.stderr.write(`bare-heartbeat: ${what}: ${outcome.message}\n`);
  else if (outcome.status !== expected) process.stderr.write(`bare-heartbeat: ${what}: HTTP ${outcome.status}\n`);
  else if (outcome.text !== '') {
    try {
      return JSON.parse(outcome.text) as unknown;
    } catch {
      process.stderr.write(`bare-heartbeat: ${what}: the answer is not JSON\n`);
    }
  }
  return null;
}

async function beat(): Promise<void> {
  const link = await readlink(config.currentSystemPath).catch(() => null);
  const body = JSON.stringify({
    hostname: config.machineId,
    ...(link === null ? {} : { current_closure: basename(link) }),
    at: new Date().toISOString(),
    agent_version: config.agentVersion,
    uptime_secs: Math.floor((performance.now() - startedMs) / 1000),
    last_event_seq_by_rollout: {},
  });
  // Parsed as the agent must (received_at, bootstrap_rollouts), and dropped: nothing here acts on it.
  answer('heartbeat', await call('POST', config.heartbeatPath, body, 10_000), 200);
}

async function heartbeats(): Promise<void> {
  for (;;) {
    const at = performance.now();
    await beat();
    await new Promise((r) => setTimeout(r, Math.max(0, at + config.intervalSecs * 1000 - performance.now())));
  }
}

async function dispatchPolls(): Promise<void> {
  const path = `${config.dispatchPath}?wait=${config.dispatchWaitSecs}`;
  for (;;) {
    const at = performance.now();
    answer('dispatch poll', await call('GET', path, null, (config.dispatchWaitSecs + 10) * 1000), 204);
    // At most one poll a second, as the agent: a CP answering at once must not get a request loop.
    await new Promise((r) => setTimeout(r, Math.max(0, at + 1000 - performance.now())));
  }
}

void heartbeats();
void dispatchPolls();
