// Runs the benchmarks one after the other in one go, each in its own process, and says how long each took.
// npm run bench                     every bench/*.bench.ts, in the order below (any not listed come after, by name)
// npm run bench -- compare replay   only these
// Every bench/*.bench.ts is found, so a new one needs no change here or in package.json.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const REPO = join(__dirname, '..', '..');
/** The comparison of issue 13 goes last: its summary table is the end of the output, ready to paste. */
const ORDER = ['event-log', 'replay', 'wakeups', 'probes', 'memory', 'footprint', 'compare'];

function benches(): string[] {
  const names = readdirSync(join(REPO, 'bench'))
    .filter((f) => f.endsWith('.bench.ts'))
    .map((f) => f.slice(0, -'.bench.ts'.length));
  const rank = (n: string): number => (ORDER.includes(n) ? ORDER.indexOf(n) : ORDER.length);
  return names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

function run(name: string): Promise<{ code: number | null; secs: number }> {
  const script = join(__dirname, `${name}.bench.js`);
  const started = performance.now();
  process.stdout.write(`\n== ${name} (${name}.bench.ts) ==\n`);
  if (!existsSync(script)) {
    process.stderr.write(`${script} is missing: build with npx tsc -p bench/tsconfig.json\n`);
    return Promise.resolve({ code: null, secs: 0 });
  }
  const child = spawn(process.execPath, [script], { stdio: 'inherit' });
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve({ code, secs: (performance.now() - started) / 1000 }));
  });
}

async function main(): Promise<void> {
  const known = benches();
  const asked = process.argv.slice(2);
  const unknown = asked.filter((n) => !known.includes(n));
  if (unknown.length > 0) {
    process.stderr.write(`no benchmark named ${unknown.join(', ')}; there are: ${known.join(', ')}\n`);
    process.exitCode = 2;
    return;
  }
  const chosen = asked.length > 0 ? known.filter((n) => asked.includes(n)) : known;
  const took: string[] = [];
  let failed = 0;
  const started = performance.now();
  for (const name of chosen) {
    const { code, secs } = await run(name);
    if (code !== 0) failed += 1;
    took.push(`${name} ${secs.toFixed(0)} s${code === 0 ? '' : ` (FAILED, exit ${code ?? 'none'})`}`);
  }
  process.stdout.write(`\nbenchmarks: ${took.join(', ')}; ${((performance.now() - started) / 60_000).toFixed(1)} min in all\n`);
  if (failed > 0) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
