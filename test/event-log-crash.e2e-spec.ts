import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { EventLog } from '../src/outbound/event-log';
import { cleanEnv } from './support/agent-process';
// The child's envelope function is the reference the log must return byte for byte.
import * as child from './support/append-child';

const CHILD = join(__dirname, 'support', 'append-child.js');
const BUILT_LOG = join(__dirname, '..', 'dist', 'outbound', 'event-log.js');

const ROUNDS = 25;

interface RoundOutput {
  acked: [string, number][];
  marked: [string, number][];
  compactions: number;
}

/** Starts the appender, lets it run 5–60 ms past its open, kills it with SIGKILL; what it printed. */
function killedRound(dir: string, mode: 'plain' | 'split'): Promise<RoundOutput> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [CHILD, dir, mode], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let timer: NodeJS.Timeout | null = null;
    const guard = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    proc.stdout.on('data', (c: Buffer) => {
      out += c.toString('utf8');
      if (timer === null && out.startsWith('ready\n')) {
        timer = setTimeout(() => proc.kill('SIGKILL'), 5 + Math.floor(Math.random() * 56));
      }
    });
    proc.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
    proc.on('error', reject);
    proc.on('close', (code, signal) => {
      clearTimeout(guard);
      if (timer !== null) clearTimeout(timer);
      if (signal !== 'SIGKILL' || !out.startsWith('ready\n')) {
        reject(new Error(`appender ended with ${code ?? signal} before being killed; stderr:\n${err}`));
        return;
      }
      const lines = out.split('\n');
      // A last line without its newline was cut by the kill mid-print: not an acknowledgement.
      lines.pop();
      const pick = (tag: string): [string, number][] =>
        lines
          .filter((l) => l.startsWith(`${tag} `))
          .map((l) => {
            const [, rolloutId, seq] = l.split(' ');
            return [rolloutId, Number(seq)];
          });
      resolve({ acked: pick('ack'), marked: pick('marked'), compactions: lines.filter((l) => l === 'compacted').length });
    });
  });
}

/** Every line of the file, checked on our own: a CRC failure here would be a record the log let through. */
function eventRecordsOnDisk(path: string): Map<string, number> {
  const counts = new Map<string, number>();
  const text = readFileSync(path);
  let pos = 0;
  while (pos < text.length) {
    const nl = text.indexOf(0x0a, pos);
    if (nl === -1) throw new Error(`${path}: bytes without a final newline at ${pos} after a repairing open`);
    const body = text.subarray(pos + 9, nl);
    if (crc32(body) !== parseInt(text.toString('latin1', pos, pos + 8), 16)) throw new Error(`${path}: bad checksum at ${pos}`);
    const rec = JSON.parse(body.toString('utf8')) as { t: string; rolloutId: string; seq: number };
    if (rec.t === 'event') counts.set(`${rec.rolloutId}#${rec.seq}`, (counts.get(`${rec.rolloutId}#${rec.seq}`) ?? 0) + 1);
    pos = nl + 1;
  }
  return counts;
}

describe('the event log under SIGKILL', () => {
  let dir: string;

  beforeAll(() => {
    if (!existsSync(BUILT_LOG)) throw new Error(`${BUILT_LOG} is missing: run \`npm run build\` first`);
    dir = mkdtempSync(join(tmpdir(), 'nfa-event-log-crash-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it(`loses no acknowledged event and never returns a torn one, over ${ROUNDS} kills`, async () => {
    const acked = new Set<string>();
    const marked = new Set<string>();
    const tornTails = { split: 0, plain: 0 };
    let tornBytes = 0;
    let compactions = 0;
    for (let round = 0; round < ROUNDS; round++) {
      // Every other round writes each record in two halves, so kills land inside records.
      const mode: keyof typeof tornTails = round % 2 === 0 ? 'split' : 'plain';
      const out = await killedRound(dir, mode);
      for (const [r, s] of out.acked) acked.add(`${r}#${s}`);
      for (const [r, s] of out.marked) marked.add(`${r}#${s}`);
      compactions += out.compactions;

      const log = await EventLog.open({ dir, maxBytes: 64 * 1024 * 1024, retentionMs: 24 * 3600_000, now: () => new Date() });
      try {
        const report = log.openReport;
        expect(report.corruptRecords).toEqual([]);
        if (report.tornTailBytes > 0) {
          tornTails[mode]++;
          tornBytes += report.tornTailBytes;
        }
        const onDisk = eventRecordsOnDisk(report.path);
        for (const key of acked) expect([key, onDisk.get(key)]).toEqual([key, 1]);
        for (const [key, n] of onDisk) expect([key, n]).toEqual([key, 1]);
        for (const rolloutId of child.ROLLOUTS) {
          const last = log.lastSeq(rolloutId);
          expect(log.events(rolloutId).map((e) => e.seq)).toEqual(Array.from({ length: last }, (_, i) => i + 1));
          for (const e of log.events(rolloutId)) expect(e.envelope).toBe(child.envelopeOf(rolloutId, e.seq));
        }
        // A process crash keeps the page cache: even an unsynced mark that resolved is there.
        for (const key of marked) {
          const [r, s] = key.split('#');
          expect([key, log.get(r, Number(s))?.delivery.state]).toEqual([key, 'delivered']);
        }
      } finally {
        await log.close();
      }
    }
    process.stdout.write(
      `event-log crash test: ${ROUNDS} SIGKILLs, ${acked.size} acknowledged events all present once, ${marked.size} marks kept, ` +
        `${compactions} compactions, torn tail repaired after ${tornTails.split} of ${Math.ceil(ROUNDS / 2)} kills with split writes and ${tornTails.plain} of ${Math.floor(ROUNDS / 2)} with whole writes (${tornBytes} bytes in all)\n`,
    );
    expect(acked.size).toBeGreaterThan(ROUNDS);
  });
});
