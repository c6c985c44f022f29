import { capFailureReason, CUT_MARK, keepEnd, reasonLength } from './failure-reason';
import { MAX_FAILURE_REASON_CHARS } from './probe.types';

describe('capFailureReason', () => {
  it('leaves a reason of at most 512 characters as it is', () => {
    const reason = 'x'.repeat(MAX_FAILURE_REASON_CHARS);
    expect(capFailureReason(reason)).toBe(reason);
  });

  it('cuts a longer reason to 512 characters, the last one a … marking the cut', () => {
    const capped = capFailureReason('y'.repeat(MAX_FAILURE_REASON_CHARS + 1));
    expect(reasonLength(capped)).toBe(MAX_FAILURE_REASON_CHARS);
    expect(capped).toBe(`${'y'.repeat(MAX_FAILURE_REASON_CHARS - 1)}${CUT_MARK}`);
  });

  it('counts multi-byte characters once each, as characters, not bytes', () => {
    const reason = 'é'.repeat(MAX_FAILURE_REASON_CHARS); // 1024 bytes of UTF-8, 512 characters
    expect(capFailureReason(reason)).toBe(reason);
    expect(capFailureReason(`${reason}é`)).toBe(`${'é'.repeat(MAX_FAILURE_REASON_CHARS - 1)}${CUT_MARK}`);
  });

  it('counts an astral character once and never splits its surrogate pair', () => {
    // 512 astral characters are 1024 UTF-16 units: under the cap by characters.
    const exact = '🦀'.repeat(MAX_FAILURE_REASON_CHARS);
    expect(capFailureReason(exact)).toBe(exact);

    const capped = capFailureReason(`a${'🦀'.repeat(MAX_FAILURE_REASON_CHARS)}`);
    expect(reasonLength(capped)).toBe(MAX_FAILURE_REASON_CHARS);
    expect(capped).toBe(`a${'🦀'.repeat(MAX_FAILURE_REASON_CHARS - 2)}${CUT_MARK}`);
    expect(capped).not.toMatch(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])/); // no lone high surrogate
  });

  it('cuts to a smaller budget when asked, and to nothing at 0', () => {
    expect(capFailureReason('abcdef', 4)).toBe('abc…');
    expect(capFailureReason('abcd', 4)).toBe('abcd');
    expect(capFailureReason('abcdef', 0)).toBe('');
  });
});

describe('keepEnd', () => {
  it('keeps the end of a text, marking the cut at its start', () => {
    expect(keepEnd('line one\nline two', 8)).toBe('…ine two');
    expect(keepEnd('short', 8)).toBe('short');
  });

  it('counts astral characters once and never starts inside a surrogate pair', () => {
    const kept = keepEnd(`${'🦀'.repeat(10)}`, 4);
    expect(kept).toBe(`${CUT_MARK}🦀🦀🦀`);
    expect(reasonLength(kept)).toBe(4);
  });
});
