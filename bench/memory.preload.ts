// Preloaded into the agent by memory.bench.ts (node --expose-gc -r): on SIGUSR2 it runs two full collections, then
// writes the resident set and the heap figures to $NFA_MEMORY_OUT. It never wakes the process itself.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';

/** What one sample says, all after the collections. */
export interface MemorySample {
  /** VmRSS, kB. */
  rssKb: number;
  heapUsed: number;
  heapTotal: number;
  /** Committed to the young generation: V8 grows it under a high allocation rate and shrinks it only when idle. */
  newSpace: number;
  /** C++ objects bound to JS ones (TLS sockets, buffers); arrayBuffers is part of it. */
  external: number;
  arrayBuffers: number;
  /** Modules in the require cache, and their source bytes. */
  modules: number;
  moduleBytes: number;
}

const out = process.env.NFA_MEMORY_OUT;

process.on('SIGUSR2', () => {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined || out === undefined) return;
  // Two: the first may leave what only a second one can free (weak callbacks, finalizers).
  gc();
  gc();
  const m = process.memoryUsage();
  const rss = /^VmRSS:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'));
  const files = Object.values(require.cache);
  const sample: MemorySample = {
    rssKb: rss ? Number(rss[1]) : -1,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    newSpace: getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.physical_space_size ?? -1,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    modules: files.length,
    moduleBytes: files.reduce((sum, mod) => sum + sourceBytes(mod?.filename), 0),
  };
  writeFileSync(out, JSON.stringify(sample));
});

function sourceBytes(filename: string | undefined): number {
  if (filename === undefined) return 0;
  try {
    return statSync(filename).size;
  } catch {
    return 0;
  }
}
