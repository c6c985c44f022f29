import http from 'node:http';
import type { ListenAddress } from '../config/listen-address';

export interface AdminAnswer {
  status: number;
  body: unknown;
}

/** Something answered HTTP at the address, but not with JSON: not (this version of) the agent's admin endpoint. */
export class AdminNotJsonError extends Error {
  constructor(readonly status: number) {
    super(`the admin endpoint answered ${status} with a body that is not JSON`);
    this.name = 'AdminNotJsonError';
  }
}

/** One GET to the agent's admin endpoint, over TCP or its unix socket. */
export function getFromAdmin(address: ListenAddress, path: string, timeoutMs = 5000, signal?: AbortSignal): Promise<AdminAnswer> {
  return new Promise((resolve, reject) => {
    const target = address.kind === 'unix' ? { socketPath: address.path } : { host: address.host, port: address.port };
    // No pooled keep-alive socket: a one-shot CLI must not wait on an idle connection to exit.
    const req = http.request({ ...target, path, method: 'GET', timeout: timeoutMs, agent: false, signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const status = res.statusCode ?? 0;
        try {
          resolve({ status, body: JSON.parse(text) as unknown });
        } catch {
          reject(new AdminNotJsonError(status));
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** One GET whose body is text (`/metrics`), over TCP or the unix socket. */
export function getTextFromAdmin(address: ListenAddress, path: string, timeoutMs = 5000): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const target = address.kind === 'unix' ? { socketPath: address.path } : { host: address.host, port: address.port };
    const req = http.request({ ...target, path, method: 'GET', timeout: timeoutMs, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}
