// A bare Node.js mTLS heartbeat loop, the yardstick of wakeups.bench.ts: the agent's steady work (a heartbeat
// every N s, a dispatch long-poll always waiting) with nothing but node:https, one keep-alive agent and JSON.
// Run by the benchmark: node wakeups.bare-loop.js <cp url> <ca> <cert> <key> <machine id> <interval secs>
import { readFileSync } from 'node:fs';
import https from 'node:https';

const [url, caPath, certPath, keyPath, machineId, intervalArg] = process.argv.slice(2);
if (url === undefined || caPath === undefined || certPath === undefined || keyPath === undefined || machineId === undefined) {
  process.stderr.write('usage: wakeups.bare-loop.js <cp url> <ca> <cert> <key> <machine id> <interval secs>\n');
  process.exit(2);
}
const intervalMs = Number(intervalArg ?? 60) * 1000;
const agent = new https.Agent({
  keepAlive: true,
  ca: readFileSync(caPath),
  cert: readFileSync(certPath),
  key: readFileSync(keyPath),
});

function call(method: 'GET' | 'POST', path: string, body?: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      new URL(path, url),
      {
        method,
        agent,
        headers: { 'X-Nixfleet-Protocol': '1', ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function beat(): Promise<void> {
  const body = JSON.stringify({
    hostname: machineId,
    at: new Date().toISOString(),
    agent_version: 'bare-loop',
    uptime_secs: Math.floor(process.uptime()),
    last_event_seq_by_rollout: {},
  });
  const answer = await call('POST', '/v1/agent/heartbeat', body);
  if (answer.status === 200) JSON.parse(answer.text);
}

async function poll(): Promise<void> {
  for (;;) {
    const answer = await call('GET', '/v1/agent/dispatch?wait=60');
    if (answer.status === 200) JSON.parse(answer.text);
  }
}

const failed = (err: unknown): void => {
  process.stderr.write(`bare loop: ${(err as Error).message}\n`);
};
beat().catch(failed);
setInterval(() => void beat().catch(failed), intervalMs);
poll().catch(failed);
