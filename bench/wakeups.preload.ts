// Preloaded into the agent by wakeups.bench.ts (node -r): counts the JS timer and immediate callbacks the
// process runs. On SIGUSR2 it writes the counts so far to $NFA_WAKEUPS_OUT; it never wakes the process itself.
import { createHook } from 'node:async_hooks';
import { writeFileSync } from 'node:fs';

const out = process.env.NFA_WAKEUPS_OUT;
const kinds = new Map<number, { kind: 'Timeout' | 'Immediate'; name: string }>();
const counts = { Timeout: 0, Immediate: 0, byName: {} as Record<string, number> };

createHook({
  init(asyncId, type, _trigger, resource) {
    if (type !== 'Timeout' && type !== 'Immediate') return;
    // The callback's name says whose timer it is (a bound function's name starts with "bound ").
    const fn = (resource as { _onTimeout?: unknown; _onImmediate?: unknown })[type === 'Timeout' ? '_onTimeout' : '_onImmediate'];
    // An arrow function has no name: the start of its source says whose it is.
    const what = typeof fn !== 'function' ? '?' : fn.name !== '' ? fn.name : fn.toString().replace(/\s+/g, ' ').slice(0, 80);
    kinds.set(asyncId, { kind: type, name: `${type} ${what}` });
  },
  before(asyncId) {
    const seen = kinds.get(asyncId);
    if (!seen) return;
    counts[seen.kind] += 1;
    counts.byName[seen.name] = (counts.byName[seen.name] ?? 0) + 1;
  },
  destroy(asyncId) {
    kinds.delete(asyncId);
  },
}).enable();

process.on('SIGUSR2', () => {
  if (out) writeFileSync(out, JSON.stringify(counts));
});
