/**
 * One rollout's seqs still to send: ascending, each once; the head goes next.
 * Sending from the head is O(1): a replay of thousands of events must not
 * shift the whole array once per event.
 */
export class SeqQueue {
  private seqs: number[] = [];
  private head = 0;

  get size(): number {
    return this.seqs.length - this.head;
  }

  peek(): number | undefined {
    return this.head < this.seqs.length ? this.seqs[this.head] : undefined;
  }

  /** Adds seqs (a new event's, or a replay's, which may reach below the head). */
  add(seqs: readonly number[]): void {
    if (seqs.length === 0) return;
    const last = this.size > 0 ? this.seqs[this.seqs.length - 1] : undefined;
    if (seqs.every((s, i) => (i === 0 ? last === undefined || s > last : s > seqs[i - 1]))) {
      this.compact();
      for (const s of seqs) this.seqs.push(s);
      return;
    }
    this.seqs = [...new Set([...this.seqs.slice(this.head), ...seqs])].sort((a, b) => a - b);
    this.head = 0;
  }

  /** Not always the head: a replay merged in while `seq` was in flight may have queued lower seqs before it. */
  remove(seq: number): void {
    if (this.seqs[this.head] === seq) {
      this.head += 1;
      return;
    }
    let lo = this.head;
    let hi = this.seqs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const at = this.seqs[mid];
      if (at === seq) {
        this.seqs.splice(mid, 1);
        return;
      }
      if (at < seq) lo = mid + 1;
      else hi = mid - 1;
    }
  }

  /** Drops the sent prefix once it is the larger part. */
  private compact(): void {
    if (this.head > 0 && this.head * 2 >= this.seqs.length) {
      this.seqs = this.seqs.slice(this.head);
      this.head = 0;
    }
  }
}
