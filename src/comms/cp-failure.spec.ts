import { MAX_RETRY_AFTER_SECS, parseRetryAfter } from './cp-failure';

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
