import http from 'node:http';
import type { ListenAddress } from '../config/listen-address';

export interface AdminAnswer {
  status: number;
  body: unknown;
}

/** One GET to the agent's admin endpoint, over TCP or its unix socket. */
export function getFromAdmin(address: ListenAddress, path: string, timeoutMs = 5000): Promise<AdminAnswer> {
  return new Promise((resolve, reject) => {
    const target =
      address.kind === 'unix' ? { socketPath: address.path } : { host: address.host, port: address.port };
    const req = http.request({ ...target, path, method: 'GET', timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown });
        } catch {
          reject(new Error(`the admin endpoint answered ${res.statusCode} with a body that is not JSON`));
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}
