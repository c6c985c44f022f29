import { classifyTransportError, MAX_RETRY_AFTER_SECS, parseRetryAfter, type TransportContext } from './cp-failure';

describe('parseRetryAfter', () => {
  const now = new Date('2026-11-28T12:00:00Z');

  it('reads delta-seconds and the HTTP-date form', () => {
    expect(parseRetryAfter('17', now)).toBe(17);
    expect(parseRetryAfter('Sat, 28 Nov 2026 12:01:30 GMT', now)).toBe(90);
    expect(parseRetryAfter('Sat, 28 Nov 2026 11:00:00 GMT', now)).toBe(0);
  });

  it('caps a huge wait at an hour, so a CP or a clock years off cannot silence the agent', () => {
    expect(parseRetryAfter('999999999', now)).toBe(MAX_RETRY_AFTER_SECS);
    expect(parseRetryAfter('Thu, 01 Jan 2099 00:00:00 GMT', now)).toBe(MAX_RETRY_AFTER_SECS);
    expect(MAX_RETRY_AFTER_SECS).toBe(3600);
  });

  it('ignores what is absent or not a delay', () => {
    expect(parseRetryAfter(undefined, now)).toBeNull();
    expect(parseRetryAfter('soon', now)).toBeNull();
    expect(parseRetryAfter('', now)).toBeNull();
  });
});

describe('classifyTransportError: a connection reset', () => {
  const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
  const fresh = (handshake: TransportContext['handshake']): TransportContext => ({
    deadlineMs: 10_000,
    deadlineHit: false,
    reusedSocket: false,
    handshake,
  });

  it.each([
    [
      'hello-sent',
      /^the connection was reset during the TLS handshake, before the control plane presented a certificate \(read ECONNRESET\)/,
    ],
    [
      'server-certificate',
      /^the control plane hung up during the TLS handshake, after presenting its certificate \(read ECONNRESET\); it most likely refused our client certificate/,
    ],
    [
      'complete',
      /^the control plane closed a new connection right after the TLS handshake \(read ECONNRESET\); it most likely refused our client certificate/,
    ],
    [null, /^the control plane closed a new connection during or right after the TLS handshake \(read ECONNRESET\)$/],
  ] as const)('on a new connection whose handshake stage is %s names what is known', (stage, expected) => {
    const f = classifyTransportError(reset, fresh(stage));
    expect(f.kind).toBe('tls');
    expect(f.detail).toMatch(expected);
  });

  it('blames the client certificate only once the control plane has presented its own', () => {
    expect(classifyTransportError(reset, fresh('hello-sent')).detail).not.toMatch(/refused our client certificate/);
    expect(classifyTransportError(reset, fresh(null)).detail).not.toMatch(/refused our client certificate/);
  });

  it('on a kept-alive connection is network trouble, whatever the handshake once was', () => {
    expect(classifyTransportError(reset, { ...fresh('complete'), reusedSocket: true })).toEqual({
      kind: 'network',
      detail: 'ECONNRESET: read ECONNRESET',
    });
  });
});
