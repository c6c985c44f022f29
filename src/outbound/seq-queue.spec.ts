import { SeqQueue } from './seq-queue';

function drain(q: SeqQueue): number[] {
  const out: number[] = [];
  for (let s = q.peek(); s !== undefined; s = q.peek()) {
    out.push(s);
    q.remove(s);
  }
  return out;
}

describe('SeqQueue', () => {
  it('hands out seqs in ascending order, each once', () => {
    const q = new SeqQueue();
    expect(q.peek()).toBeUndefined();
    q.add([1, 2, 3]);
    q.add([4]);
    expect(q.size).toBe(4);
    expect(drain(q)).toEqual([1, 2, 3, 4]);
    expect(q.size).toBe(0);
  });

  it('merges a replay that reaches below the head, and drops seqs already queued', () => {
    const q = new SeqQueue();
    q.add([11, 12, 13]);
    q.remove(11);
    q.add([5, 6, 12, 14]);
    expect(drain(q)).toEqual([5, 6, 12, 13, 14]);
  });

  it('removes a seq that is not the head (it was in flight when lower seqs were merged in)', () => {
    const q = new SeqQueue();
    q.add([11, 12, 13]);
    // 11 is in flight; a replay from 0 queues 1..10 before it.
    q.add([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    q.remove(11);
    q.remove(99);
    expect(drain(q)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13]);
  });

  it('keeps its order across many sends and appends (the sent prefix is dropped as it goes)', () => {
    const q = new SeqQueue();
    const sent: number[] = [];
    let next = 1;
    for (let round = 0; round < 50; round++) {
      q.add(Array.from({ length: 100 }, () => next++));
      for (let i = 0; i < 90; i++) {
        const s = q.peek() as number;
        sent.push(s);
        q.remove(s);
      }
    }
    sent.push(...drain(q));
    expect(sent).toEqual(Array.from({ length: 5_000 }, (_, i) => i + 1));
  });
});
