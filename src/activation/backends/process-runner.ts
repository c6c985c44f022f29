import { spawn } from 'node:child_process';
import { EXIT_CLOSE_GRACE_MS, KILL_GRACE_MS, STDERR_TAIL_BYTES } from '../activation.constants';

export interface RunOptions {
  readonly timeoutMs: number;
  /** After SIGTERM on timeout or abort, how long before SIGKILL. */
  readonly killGraceMs?: number;
  /** The child's whole environment; the agent's own when absent. */
  readonly env?: Readonly<Record<string, string>>;
  /** Aborting kills the child's process group as a timeout does (SIGTERM, then SIGKILL after the grace). */
  readonly signal?: AbortSignal;
  /** Keep the first this many bytes of stdout; stdout is dropped when absent. */
  readonly stdoutMaxBytes?: number;
  /**
   * SIGKILL whatever is left of the child's process group once the run has
   * ended (a health check's `cmd &`): nothing may outlive the run. Off for
   * activations, whose commands may start what is meant to keep running.
   */
  readonly reapGroup?: boolean;
  /**
   * Called with each line of stderr as it arrives (a CR ends a line too:
   * progress output redraws with it), trimmed, empty ones skipped. For
   * progress only: the tail is kept as before.
   */
  readonly onStderrLine?: (line: string) => void;
}

export interface ProcessResult {
  /** null when it never ran or a signal ended it. */
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Why it never ran (ENOENT, EACCES…); null when it did. */
  readonly spawnError: string | null;
  readonly timedOut: boolean;
  /** The caller's signal aborted the run (before the start, or by killing it). */
  readonly aborted: boolean;
  /** The last STDERR_TAIL_BYTES of stderr, valid UTF-8, trimmed. */
  readonly stderrTail: string;
  /** The head of stdout (RunOptions.stdoutMaxBytes), decoded as UTF-8; '' when not kept. */
  readonly stdout: string;
}

/**
 * Runs argv directly (no shell: a closure name is never interpreted) and
 * keeps only the tail of stderr. The child leads its own process group so a
 * timeout kills whatever it started too. Never rejects.
 */
export function runProcess(argv: readonly string[], options: RunOptions): Promise<ProcessResult> {
  const [program, ...args] = argv;
  if (program === undefined || program === '') {
    return Promise.resolve({
      exitCode: null,
      signal: null,
      spawnError: 'no program to run',
      timedOut: false,
      aborted: false,
      stderrTail: '',
      stdout: '',
    });
  }
  if (options.signal?.aborted) {
    return Promise.resolve({ exitCode: null, signal: null, spawnError: null, timedOut: false, aborted: true, stderrTail: '', stdout: '' });
  }
  return new Promise<ProcessResult>((resolve) => {
    const stderr = new TailBuffer(STDERR_TAIL_BYTES);
    const lines = options.onStderrLine === undefined ? null : new LineSplitter(options.onStderrLine);
    const stdout = new HeadBuffer(options.stdoutMaxBytes ?? 0);
    let timedOut = false;
    let aborted = false;
    let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
    const timers: NodeJS.Timeout[] = [];
    let settled = false;

    // stdout is dropped unless asked for: raw output would break the agent's JSON log lines.
    const keepStdout = options.stdoutMaxBytes !== undefined;
    const child = spawn(program, args, {
      stdio: ['ignore', keepStdout ? 'pipe' : 'ignore', 'pipe'],
      detached: true,
      shell: false,
      env: options.env,
    });
    const settle = (result: Omit<ProcessResult, 'stderrTail' | 'timedOut' | 'aborted' | 'stdout'>): void => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      options.signal?.removeEventListener('abort', onAbort);
      if (options.reapGroup === true) signalGroup('SIGKILL');
      lines?.end();
      child.stderr?.destroy();
      child.stdout?.destroy();
      resolve({ ...result, timedOut, aborted, stderrTail: stderr.text(), stdout: stdout.text() });
    };
    // The group outlives its leader while a member runs (one holding stderr
    // open, one that ignored SIGTERM): it is signalled even after the leader
    // exited. Only until the run settles, within seconds, so the group id
    // (the leader's pid) cannot have been handed to a new group meanwhile.
    const signalGroup = (signal: NodeJS.Signals): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, signal);
      } catch {
        // Already gone.
      }
    };

    child.stderr?.on('data', (chunk: Buffer) => {
      stderr.push(chunk);
      lines?.push(chunk);
    });
    child.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.on('error', (err: NodeJS.ErrnoException) => {
      // Spawn failures come with no pid; later errors (a failed kill) change nothing.
      if (child.pid === undefined) settle({ exitCode: null, signal: null, spawnError: `${err.code ?? 'error'}: ${err.message}` });
    });
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      // A grandchild that inherited stderr can hold the pipe open after the
      // child exits; the exit status is what counts, so 'close' gets a grace.
      timers.push(setTimeout(() => settle({ exitCode: code, signal, spawnError: null }), EXIT_CLOSE_GRACE_MS)); // not a job: this child's grace
    });
    child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
      if (child.pid === undefined) return; // the 'error' handler settles a failed spawn
      settle({ exitCode: code, signal, spawnError: null });
    });
    const terminate = (): void => {
      signalGroup('SIGTERM');
      timers.push(setTimeout(() => signalGroup('SIGKILL'), options.killGraceMs ?? KILL_GRACE_MS)); // not a job: this child's kill grace
    };
    function onAbort(): void {
      if (timedOut || aborted) return;
      aborted = true;
      terminate();
    }
    options.signal?.addEventListener('abort', onAbort, { once: true });
    timers.push(
      setTimeout(() => {
        // not a job: this child's deadline
        // Exited in time: a grandchild holding stderr is not the command timing out.
        if (aborted || exited) return;
        timedOut = true;
        terminate();
      }, options.timeoutMs),
    );
  });
}

/** One line describing how a run that did not exit 0 ended, for the head of a stderrTail. */
export function describeEnd(what: string, result: ProcessResult, timeoutMs: number): string {
  if (result.spawnError !== null) return `${what} could not be started (${result.spawnError})`;
  const how = result.signal !== null ? `was killed by ${result.signal}` : `exited with code ${String(result.exitCode)}`;
  return result.timedOut ? `${what} timed out after ${formatMs(timeoutMs)} and ${how}` : `${what} ${how}`;
}

/** `head` then as much of `tail`'s end as fits in STDERR_TAIL_BYTES. */
export function composeTail(head: string, tail: string): string {
  if (tail === '') return utf8Tail(Buffer.from(head), STDERR_TAIL_BYTES);
  const budget = STDERR_TAIL_BYTES - Buffer.byteLength(head) - 1;
  if (budget <= 0) return utf8Tail(Buffer.from(head), STDERR_TAIL_BYTES);
  return `${head}\n${utf8Tail(Buffer.from(tail), budget)}`;
}

/** The last `max` bytes as a trimmed string that does not start inside a UTF-8 sequence. */
export function utf8Tail(bytes: Buffer, max: number): string {
  let start = Math.max(0, bytes.length - max);
  // Skip continuation bytes (10xxxxxx): a cut character would decode as U+FFFD.
  while (start < bytes.length && start > 0 && (bytes[start] & 0xc0) === 0x80) start += 1;
  return bytes.subarray(start).toString('utf8').trim();
}

/** A duration as an operator reads it: `300 ms`, `10 s`, `2 min`. */
export function formatMs(ms: number): string {
  return ms >= 60_000 && ms % 60_000 === 0 ? `${ms / 60_000} min` : ms >= 1000 ? `${ms / 1000} s` : `${ms} ms`;
}

/** A partial line longer than this is passed on as it is: a child that never ends a line must not grow the buffer. */
const MAX_LINE_BYTES = STDERR_TAIL_BYTES;

/** Splits a byte stream into lines for a callback; a callback that throws does not break the run. */
class LineSplitter {
  private pending = Buffer.alloc(0);

  constructor(private readonly onLine: (line: string) => void) {}

  push(chunk: Buffer): void {
    let rest = Buffer.concat([this.pending, chunk]);
    for (let end = findLineEnd(rest); end !== -1; end = findLineEnd(rest)) {
      this.emit(rest.subarray(0, end));
      rest = rest.subarray(end + 1);
    }
    if (rest.length > MAX_LINE_BYTES) {
      this.emit(rest);
      rest = Buffer.alloc(0);
    }
    this.pending = Buffer.from(rest);
  }

  end(): void {
    if (this.pending.length > 0) this.emit(this.pending);
    this.pending = Buffer.alloc(0);
  }

  private emit(bytes: Buffer): void {
    const line = bytes.toString('utf8').trim();
    if (line === '') return;
    try {
      this.onLine(line);
    } catch {
      // Progress is best effort: the run and its result do not depend on it.
    }
  }
}

function findLineEnd(bytes: Buffer): number {
  const lf = bytes.indexOf(0x0a);
  const cr = bytes.indexOf(0x0d);
  if (lf === -1) return cr;
  if (cr === -1) return lf;
  return Math.min(lf, cr);
}

/** Keeps at most the last `max` bytes pushed into it. */
class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly max: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.chunks.length > 1 && this.size - this.chunks[0].length >= this.max) {
      this.size -= this.chunks[0].length;
      this.chunks.shift();
    }
  }

  text(): string {
    return utf8Tail(Buffer.concat(this.chunks), this.max);
  }
}

/** Keeps the first `max` bytes pushed into it. */
class HeadBuffer {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly max: number) {}

  push(chunk: Buffer): void {
    if (this.size >= this.max) return;
    const part = chunk.subarray(0, this.max - this.size);
    this.chunks.push(part);
    this.size += part.length;
  }

  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}
