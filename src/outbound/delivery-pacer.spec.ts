import { DeliveryPacer, type PacerSettings } from './delivery-pacer';
import { DELIVERY_PACING } from './outbound.constants';

const SETTINGS: PacerSettings = {
  maxWindow: 4,
  initialWindow: 2,
  minWindow: 1 / 8,
  riseFactor: 2,
  riseSlackMs: 20,
  baseWindowMs: 10_000,
};

/** `n` answers of `rttMs` each, one after the other from `fromMono`; the time of the last. */
function answers(p: DeliveryPacer, n: number, rttMs: number, fromMono: number, windowLimited = true): number {
  let now = fromMono;
  for (let i = 0; i < n; i++) {
    now += rttMs;
    p.answered(rttMs, now, windowLimited);
  }
  return now;
}

describe('DeliveryPacer', () => {
  it('the agent starts at two rollouts in flight and may go up to one per delivery connection', () => {
    const p = new DeliveryPacer(DELIVERY_PACING);
    expect(p.lanes()).toBe(2);
    expect(DELIVERY_PACING.maxWindow).toBeGreaterThan(DELIVERY_PACING.initialWindow);
    expect(p.gapMs()).toBe(0);
  });

  it('grows by one rollout in flight per round trip while latency stays flat, up to the cap', () => {
    const p = new DeliveryPacer(SETTINGS);
    // A round trip at a window of 2 is two answers.
    expect(p.answered(5, 5, true)).toBe('grew');
    expect(p.window).toBe(2.5);
    p.answered(5, 10, true);
    expect(p.lanes()).toBe(2);
    expect(p.window).toBeCloseTo(2.9, 5);
    answers(p, 20, 5, 10);
    expect(p.window).toBe(4);
    expect(p.lanes()).toBe(4);
    expect(p.answered(5, 200, true)).toBe('held');
    expect(p.window).toBe(4);
  });

  it('does not grow while it is not the limit (fewer rollouts to send than lanes)', () => {
    const p = new DeliveryPacer(SETTINGS);
    for (let i = 1; i <= 50; i++) expect(p.answered(5, i * 5, false)).toBe('held');
    expect(p.window).toBe(2);
  });

  it('halves on an overload answer (429, 503, timeout), at most once per round trip, and never below the floor', () => {
    const p = new DeliveryPacer({ ...SETTINGS, initialWindow: 4 });
    const now = answers(p, 10, 10, 0);
    expect(p.overloaded(now)).toBe('shrank');
    expect(p.window).toBe(2);
    // The other answers of the same round trip were under way already: no second halving for them.
    expect(p.overloaded(now + 5)).toBe('held');
    expect(p.window).toBe(2);
    expect(p.overloaded(now + 10)).toBe('shrank');
    expect(p.window).toBe(1);
    let t = now + 10;
    for (let i = 0; i < 10; i++) p.overloaded((t += 10));
    expect(p.window).toBe(1 / 8);
    expect(p.lanes()).toBe(1);
    expect(p.overloaded(t + 10)).toBe('held');
  });

  it('below one rollout in flight, spreads the sends out: one per 1/window round trips', () => {
    const p = new DeliveryPacer({ ...SETTINGS, initialWindow: 1 });
    const now = answers(p, 5, 40, 0, false);
    p.overloaded(now);
    expect(p.window).toBe(0.5);
    expect(p.gapMs()).toBeCloseTo(40, 5);
    p.overloaded(now + 40);
    expect(p.window).toBe(0.25);
    expect(p.gapMs()).toBeCloseTo(120, 5);
    // Good answers bring it back, a quarter per answer, to no gap at all.
    let t = now + 40;
    for (let i = 0; i < 7; i++) p.answered(40, (t += 40), true);
    expect(p.window).toBe(1);
    expect(p.gapMs()).toBe(0);
  });

  it('halves when latency rises well past the base, and halves again each round trip it stays up', () => {
    const p = new DeliveryPacer({ ...SETTINGS, initialWindow: 4 });
    let t = answers(p, 20, 2, 0);
    expect(p.window).toBe(4);
    // The CP slows down: 2 ms → 200 ms. The smoothed round trip crosses 2 × 2 + 20 ms on the first answer.
    expect(p.answered(200, (t += 200), true)).toBe('shrank');
    expect(p.window).toBe(2);
    // Answers that come back within the same (smoothed) round trip do not halve again.
    expect(p.answered(200, (t += 1), true)).toBe('held');
    t += 200;
    expect(p.answered(200, t, true)).toBe('shrank');
    expect(p.window).toBe(1);
    expect(p.gapMs()).toBe(0);
    t += 200;
    expect(p.answered(200, t, true)).toBe('shrank');
    expect(p.gapMs()).toBeGreaterThan(0);
  });

  it('reads scheduler noise within the slack as flat latency', () => {
    const p = new DeliveryPacer(SETTINGS);
    let t = 0;
    for (let i = 0; i < 200; i++) {
      const rtt = i % 10 === 0 ? 15 : 0.5;
      expect(p.answered(rtt, (t += rtt), true)).not.toBe('shrank');
    }
    expect(p.window).toBe(4);
  });

  it('after a quiet spell longer than a base period, measures the CP afresh', () => {
    const p = new DeliveryPacer(SETTINGS);
    const t = answers(p, 20, 1, 0, false);
    expect(p.smoothedRttMs).toBeCloseTo(1, 5);
    // An hour later the CP answers in 80 ms: its latency now, not a rise from the 1 ms of an hour ago.
    expect(p.answered(80, t + 3_600_000, true)).toBe('grew');
    expect(p.smoothedRttMs).toBe(80);
    expect(p.answered(80, t + 3_600_080, true)).toBe('grew');
  });

  it('takes no latency sample from an answer on a new connection (its time holds the handshakes), yet counts it as an answer', () => {
    const p = new DeliveryPacer(SETTINGS);
    answers(p, 10, 1, 0, false);
    expect(p.answered(null, 20, true)).toBe('grew');
    expect(p.smoothedRttMs).toBeCloseTo(1, 5);
  });

  it('takes a CP that stays slower as its new normal after a base period, and grows again', () => {
    const p = new DeliveryPacer({ ...SETTINGS, initialWindow: 4 });
    let t = answers(p, 20, 2, 0);
    // From here every answer takes 100 ms: it shrinks while that reads as a rise...
    for (let i = 0; i < 30; i++) p.answered(100, (t += 100), true);
    expect(p.window).toBe(1 / 8);
    // ...until a whole base period (10 s) has seen nothing under 100 ms: within two periods.
    for (let i = 0; i < 200; i++) p.answered(100, (t += 100), true);
    expect(p.window).toBe(4);
    // A rise from the new base still counts, once the smoothed round trip has taken it in.
    const changes = [1, 2, 3, 4, 5].map(() => p.answered(400, (t += 400), true));
    expect(changes).toEqual(['held', 'held', 'held', 'shrank', 'shrank']);
  });
});
