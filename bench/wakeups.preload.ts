// Preloaded into the agent by wakeups.bench.ts (node -r): counts the JS timer and immediate callbacks the
// process runs. On SIGUSR2 it writes the counts so far to $NFA_WAKEUPS_OUT; it never wakes the process itself.
import { createHook } from 'node:async_hooks';
import { writeFileSync } from 'node:fs';

const out = process.env.NFA_WAKEUPS_OUT;
const kinds = new Map<number, 'Timeout' | 'Immediate'>();
const counts = { Timeout: 0, Immediate: 0 };

createHook({
  init(asyncId, type) {
    if (type === 'Timeout' || type === 'Immediate') kinds.set(asyncId, type);
  },
  before(asyncId) {
    const kind = kinds.get(asyncId);
    if (kind) counts[kind] += 1;
  },
  destroy(asyncId) {
    kinds.delete(asyncId);
  },
}).enable();

process.on('SIGUSR2', () => {
  if (out) writeFileSync(out, JSON.stringify(counts));
});
