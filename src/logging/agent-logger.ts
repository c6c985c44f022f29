import { inspect } from 'node:util';
import { ConsoleLogger, type LogLevel } from '@nestjs/common';
import { redactPem } from '../common/pem';
import type { AgentLogLevel, LogFormat } from '../config/settings';
import { type JournalStreams, NO_JOURNAL, withPriority } from './journal-stream';

const LEVELS: Record<AgentLogLevel, LogLevel[]> = {
  error: ['fatal', 'error'],
  warn: ['fatal', 'error', 'warn'],
  info: ['fatal', 'error', 'warn', 'log'],
  debug: ['fatal', 'error', 'warn', 'log', 'debug'],
  verbose: ['fatal', 'error', 'warn', 'log', 'debug', 'verbose'],
};

/** Nest's own start-up narration: useful when debugging, noise in an operator's journal. */
const FRAMEWORK_CONTEXTS = new Set(['NestFactory', 'InstanceLoader', 'RoutesResolver', 'RouterExplorer', 'NestApplication']);

/** Structured data of one entry: the trailing plain object of a log call. */
export type LogFields = Record<string, unknown>;

export type JsonLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'verbose';

/**
 * sd-daemon(3)'s `<N>` line prefixes, the syslog priorities journald files a
 * line under (`journalctl -p warning`). Fatal is an error too: the agent
 * logs it only on its way out, and `-p err` must show it.
 */
export const SYSLOG_PRIORITY: Record<LogLevel, number> = {
  fatal: 3,
  error: 3,
  warn: 4,
  log: 6,
  debug: 7,
  verbose: 7,
};

const JSON_LEVEL: Record<LogLevel, JsonLevel> = {
  fatal: 'fatal',
  error: 'error',
  warn: 'warn',
  log: 'info',
  debug: 'debug',
  verbose: 'verbose',
};

/** One line of `--log-format json`. */
export interface JsonLogEntry {
  /** RFC 3339, UTC. */
  time: string;
  /** The names --log-level uses, as log shippers expect them (Nest calls `info` "log"). */
  level: JsonLevel;
  context: string;
  message: string;
  fields?: LogFields;
  stack?: string;
}

export interface LogSink {
  write(stream: 'stdout' | 'stderr', text: string): void;
}

export interface AgentLoggerOptions {
  now?: () => Date;
  sink?: LogSink;
  colors?: boolean;
  /** The streams journald reads (see `journalStreams`): each of their lines starts with its priority. */
  journal?: JournalStreams;
}

/** A log line is no place for a document: anything longer is cut (the cut says how much). */
export const MAX_LOGGED_CHARS = 8192;
const MAX_FIELD_DEPTH = 4;
/** Field names whose values are secrets whatever they hold. */
const SECRET_FIELD = /(?:private.?key|passphrase|password|secret|token)$/i;
const DEFAULT_CONTEXT = 'nixfleet-agent';

const processSink: LogSink = { write: (stream, text) => process[stream].write(text) };

/**
 * Nest's logger: one JSON object per line for journald and log shippers, or
 * Nest's readable text for a terminal.
 *
 * Fields: a plain object as the last argument (before Nest's context) is the
 * entry's `fields`, not a second message:
 *   this.logger.warn('heartbeat failed; retrying', { status: 503, retryInSecs: 4 });
 * In text mode the fields follow the message as `key=value`. Times are ISO
 * 8601 UTC in both formats, like every other time the agent prints.
 *
 * Under journald (a stream `JOURNAL_STREAM` names) every line starts with
 * its syslog priority, `<3>` to `<7>`, in JSON mode too: journald strips it
 * and files the line under it, so `journalctl -o cat` still shows pure JSON,
 * and without it every line would be "info". A pipe or file gets no prefix.
 *
 * Whatever a caller passes, PEM blocks are replaced and long strings cut:
 * key material and whole documents never reach the journal.
 */
export class AgentLogger extends ConsoleLogger {
  private readonly format: LogFormat;
  private readonly now: () => Date;
  private readonly sink: LogSink;
  private readonly journal: JournalStreams;

  constructor(format: LogFormat, level: AgentLogLevel, options: AgentLoggerOptions = {}) {
    super(DEFAULT_CONTEXT, {
      json: format === 'json',
      colors: format === 'text' && (options.colors ?? process.stdout.isTTY === true),
      logLevels: LEVELS[level],
      prefix: DEFAULT_CONTEXT,
    });
    this.format = format;
    this.now = options.now ?? (() => new Date());
    this.sink = options.sink ?? processSink;
    this.journal = options.journal ?? NO_JOURNAL;
  }

  override log(message: unknown, ...rest: unknown[]): void {
    const context = rest[rest.length - 1];
    if (typeof context === 'string' && FRAMEWORK_CONTEXTS.has(context)) {
      super.debug(message, ...rest);
      return;
    }
    super.log(message, ...rest);
  }

  protected override printMessages(
    messages: unknown[],
    context = '',
    logLevel: LogLevel = 'log',
    writeStreamType?: 'stdout' | 'stderr',
    errorStack?: unknown,
  ): void {
    const stream = writeStreamType ?? 'stdout';
    const { texts, fields } = splitFields(messages);
    for (const raw of texts) {
      const { message, stack } = messageOf(raw, errorStack);
      switch (this.format) {
        case 'json':
          this.write(stream, logLevel, `${JSON.stringify(this.entry(logLevel, context, message, fields, stack))}\n`);
          break;
        case 'text':
          this.write(stream, logLevel, this.textLine(logLevel, context, message, fields));
          // Nest prints an error's stack on its own lines; an Error passed as the message has one too.
          if (stack !== undefined && errorStack === undefined) this.write('stderr', logLevel, `${stack}\n`);
          break;
        default: {
          const never: never = this.format;
          return never;
        }
      }
    }
  }

  protected override printStackTrace(stack: string): void {
    if (this.format === 'text' && stack) this.write('stderr', 'error', `${clean(stack)}\n`);
  }

  /** Nest's text lines carry the same instant as JSON's `time`, not a local time without a zone. */
  protected override getTimestamp(): string {
    return this.now().toISOString();
  }

  /** journald takes each line as an entry: a stack or a multi-line message gets the prefix on every line. */
  private write(stream: 'stdout' | 'stderr', level: LogLevel, text: string): void {
    this.sink.write(stream, this.journal[stream] ? withPriority(text, SYSLOG_PRIORITY[level]) : text);
  }

  private entry(level: LogLevel, context: string, message: string, fields: LogFields | undefined, stack: string | undefined): JsonLogEntry {
    const entry: JsonLogEntry = {
      time: this.now().toISOString(),
      level: JSON_LEVEL[level],
      context: context || this.context || DEFAULT_CONTEXT,
      message,
    };
    if (fields !== undefined) entry.fields = fields;
    if (stack !== undefined) entry.stack = stack;
    return entry;
  }

  private textLine(level: LogLevel, context: string, message: string, fields: LogFields | undefined): string {
    const body = fields === undefined ? message : `${message}${message === '' ? '' : ' '}${textFields(fields)}`;
    return this.formatMessage(
      level,
      body,
      this.formatPid(process.pid),
      level.toUpperCase().padStart(7, ' '),
      this.formatContext(context),
      this.updateAndGetTimestampDiff(),
    );
  }
}

export function createAgentLogger(format: LogFormat, level: AgentLogLevel, options?: AgentLoggerOptions): AgentLogger {
  return new AgentLogger(format, level, options);
}

/** The trailing plain object is the fields; a lone plain object is fields with no message text. */
function splitFields(messages: unknown[]): { texts: unknown[]; fields: LogFields | undefined } {
  const last = messages[messages.length - 1];
  if (!isPlainObject(last)) return { texts: messages, fields: undefined };
  const texts = messages.length > 1 ? messages.slice(0, -1) : [''];
  return { texts, fields: scrubFields(last) };
}

function messageOf(raw: unknown, errorStack: unknown): { message: string; stack: string | undefined } {
  const given = typeof errorStack === 'string' && errorStack !== '' ? clean(errorStack) : undefined;
  if (typeof raw === 'string') return { message: clean(raw), stack: given };
  if (raw instanceof Error)
    return { message: clean(raw.message), stack: given ?? (raw.stack === undefined ? undefined : clean(raw.stack)) };
  return { message: clean(inspect(raw, { depth: MAX_FIELD_DEPTH, breakLength: Infinity })), stack: given };
}

/** PEM blocks out, length capped. */
export function clean(text: string): string {
  const redacted = redactPem(text);
  return redacted.length > MAX_LOGGED_CHARS
    ? `${redacted.slice(0, MAX_LOGGED_CHARS)}... (${redacted.length - MAX_LOGGED_CHARS} more characters cut)`
    : redacted;
}

/** A copy that is safe to print and to JSON.stringify: no secrets, no raw bytes, no cycles, no depth without end. */
function scrubFields(fields: LogFields): LogFields {
  const seen = new WeakSet<object>();
  const scrub = (value: unknown, depth: number): unknown => {
    if (typeof value === 'string') return clean(value);
    if (typeof value === 'bigint' || typeof value === 'symbol' || typeof value === 'function') return String(value);
    if (typeof value !== 'object' || value === null) return value;
    if (value instanceof Date) return Number.isNaN(value.getTime()) ? 'Invalid Date' : value.toISOString();
    if (value instanceof Error) return clean(value.message);
    // Bytes may be key material: their size is all a log needs.
    if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return `[${value.byteLength} bytes]`;
    if (seen.has(value)) return '[circular]';
    if (depth >= MAX_FIELD_DEPTH) return '[nested too deep]';
    seen.add(value);
    if (Array.isArray(value)) return value.map((v) => scrub(v, depth + 1));
    if (!isPlainObject(value)) return `[${value.constructor?.name ?? 'object'}]`;
    const out: LogFields = {};
    for (const [k, v] of Object.entries(value)) out[k] = SECRET_FIELD.test(k) ? '[redacted]' : scrub(v, depth + 1);
    return out;
  };
  return scrub(fields, 0) as LogFields;
}

function textFields(fields: LogFields): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${typeof v === 'string' && /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v)}`)
    .join(' ');
}

function isPlainObject(v: unknown): v is LogFields {
  if (typeof v !== 'object' || v === null) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}
