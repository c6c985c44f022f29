/**
 * `user:password@` in a URL. Judged on the text, not on `new URL()`: a
 * password with an unencoded "/", "?" or "#" makes a parser see a host and a
 * path, and the password would be echoed as part of them.
 *
 * An "@" in the authority (between "//" and the first "/", "?" or "#") is
 * userinfo. An "@" further on is a path's (`https://cp.example/a@b`), unless
 * what stands before that first delimiter is no `host[:port]`: then it is a
 * password cut by its own "/" (`https://fleet:pa/ss@cp.example`).
 */
const AUTHORITY = /^[^/?#]*\/\/([^/?#]*)/;
const HOST_PORT = /^(?:\[[0-9A-Fa-f:.]+\]|[^:@[\]]*)(?::\d*)?$/;

export function hasUserinfo(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const authority = AUTHORITY.exec(value);
  if (authority === null) return false;
  if (authority[1].includes('@')) return true;
  return value.indexOf('@', authority[0].length) !== -1 && !HOST_PORT.test(authority[1]);
}

/**
 * The URL with everything between "//" and its last "@" replaced: hiding a
 * path with it is harmless, leaving a piece of a password is not.
 */
export function withoutUserinfo(value: string, mask: string): string {
  return value.replace(/^([^/?#]*\/\/).*@/s, `$1${mask}`);
}

/** What may be shown of a string: a URL's credentials masked, anything else as it is. */
export function maskUserinfo(value: string): string {
  return hasUserinfo(value) ? withoutUserinfo(value, '***@') : value;
}

/**
 * The port of an URL's authority when it is out of range (0, or above
 * 65535), which the URL check only calls "not a URL".
 */
export function portOutOfRange(value: unknown): number | null {
  if (typeof value !== 'string') return null;
  const authority = AUTHORITY.exec(value);
  if (authority === null) return null;
  const port = /:(\d+)$/.exec(authority[1].replace(/^.*@/s, ''));
  if (port === null) return null;
  const n = Number(port[1]);
  return n < 1 || n > 65535 ? n : null;
}
