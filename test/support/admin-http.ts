import http from 'node:http';
import net from 'node:net';
import { getFromAdmin } from '../../src/cli/admin-request';
import type { ListenAddress } from '../../src/config/listen-address';
import type { RunningAgent } from './agent-process';

/**
 * The agent's admin endpoint on loopback TCP, as the e2e specs read it:
 * /status through the CLI's own client, text bodies (/metrics) over plain
 * HTTP, and whether the port takes connections at all.
 */

export type Json = Record<string, unknown>;

/** `--admin-listen 127.0.0.1:<port>`, as `getFromAdmin` addresses it. */
export function adminAt(port: number): ListenAddress {
  return { kind: 'tcp', host: '127.0.0.1', port };
}

/** The /status document, whatever the HTTP status. */
export async function getStatus(port: number): Promise<Json> {
  return (await getFromAdmin(adminAt(port), '/status')).body as Json;
}

/**
 * Polls /status every 100 ms until it answers 200 with a document `accept`
 * holds for (a throw in `accept` counts as "not yet"); fails at once if the
 * agent exits, and after `timeoutMs` with the last answer and the output.
 */
export async function statusWhen(
  agent: RunningAgent,
  port: number,
  accept: (body: Json) => boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<Json> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    if (agent.child.exitCode !== null || agent.child.signalCode !== null) {
      throw new Error(
        `agent exited (${agent.child.exitCode ?? agent.child.signalCode}) while waiting for ${what}; output:\n${agent.output()}`,
      );
    }
    try {
      const answer = await getFromAdmin(adminAt(port), '/status');
      last = answer.body;
      if (answer.status === 200 && accept(answer.body as Json)) return answer.body as Json;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() >= deadline) {
      throw new Error(`/status never showed ${what} within ${timeoutMs} ms; last: ${JSON.stringify(last)}; output:\n${agent.output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** One GET on a connection of its own, the body as text (/metrics is not JSON). */
export function getText(port: number, path: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'GET', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** 'connected', or the error code a TCP connect to `host:port` failed with (ECONNREFUSED: nothing listens). */
export function tcpConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}
