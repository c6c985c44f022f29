import { isIP } from 'node:net';

export type ListenAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export type ListenParse = { ok: true; value: ListenAddress } | { ok: false; reason: string };

/** `HOST:PORT`, `[IPv6]:PORT` or `unix:/absolute/path`. */
export function parseListenAddress(raw: string): ListenParse {
  if (raw.startsWith('unix:')) {
    const path = raw.slice('unix:'.length);
    if (!path.startsWith('/')) return { ok: false, reason: 'a unix socket path must be absolute (unix:/run/x.sock)' };
    return { ok: true, value: { kind: 'unix', path } };
  }
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(raw);
  if (!m) return { ok: false, reason: 'must be HOST:PORT, [IPv6]:PORT or unix:/path' };
  const host = m[1] ?? m[2] ?? '';
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return { ok: false, reason: `port ${port} is out of range 1-65535` };
  if (m[1] !== undefined && isIP(host) !== 6) return { ok: false, reason: `"${host}" is not an IPv6 address` };
  return { ok: true, value: { kind: 'tcp', host, port } };
}

/** The admin endpoint has no authentication of its own: by default only this host may reach it. */
export function isLoopback(address: ListenAddress): boolean {
  if (address.kind === 'unix') return true;
  const host = address.host.toLowerCase();
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

export function formatListenAddress(address: ListenAddress): string {
  switch (address.kind) {
    case 'unix':
      return `unix:${address.path}`;
    case 'tcp':
      return isIP(address.host) === 6 ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
    default: {
      const never: never = address;
      return never;
    }
  }
}
