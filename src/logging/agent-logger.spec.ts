import { closeSync, fstatSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '@nestjs/common';
import type { AgentLogLevel, LogFormat } from '../config/settings';
import { AgentLogger, type JsonLogEntry, type LogSink, MAX_LOGGED_CHARS } from './agent-logger';
import { journalStreams, type JournalStreams } from './journal-stream';

const NOW = new Date('2026-11-28T12:00:00.123Z');
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const PEM_KEY = '-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----';

interface Written {
  stream: 'stdout' | 'stderr';
  text: string;
}

/** The real AgentLogger behind Nest's `Logger`, as the app installs it, writing into an array. */
function install(format: LogFormat, level: AgentLogLevel = 'info', journal?: JournalStreams): Written[] {
  const written: Written[] = [];
  const sink: LogSink = { write: (stream, text) => written.push({ stream, text }) };
  Logger.overrideLogger(new AgentLogger(format, level, { now: () => NOW, sink, colors: false, journal }));
  return written;
}

function entries(written: Written[]): JsonLogEntry[] {
  return written.map((w) => {
    expect(w.text.endsWith('\n')).toBe(true);
    expect(w.text.slice(0, -1)).not.toContain('\n');
    return JSON.parse(w.text) as JsonLogEntry;
  });
}

describe('AgentLogger, JSON lines', () => {
  it('writes one object per entry with time, level, context and message', () => {
    const written = install('json');

    new Logger('HeartbeatService').log('heartbeat every 60 s');
    new Logger('DrainerService').warn('delivering seq 3 failed; retrying');

    const [first, second] = entries(written);
    expect(first).toEqual({
      time: '2026-11-28T12:00:00.123Z',
      level: 'info',
      context: 'HeartbeatService',
      message: 'heartbeat every 60 s',
    });
    expect(first.time).toMatch(RFC3339);
    expect(second).toMatchObject({ level: 'warn', context: 'DrainerService' });
    expect(written.map((w) => w.stream)).toEqual(['stdout', 'stdout']);
  });

  it('takes a trailing plain object as the fields of the entry, not as a second message', () => {
    const written = install('json');

    new Logger('HeartbeatService').warn('heartbeat failed; retrying', {
      status: 503,
      retryInSecs: 4.2,
      at: new Date('2026-11-28T11:59:00Z'),
    });

    expect(entries(written)).toEqual([
      {
        time: NOW.toISOString(),
        level: 'warn',
        context: 'HeartbeatService',
        message: 'heartbeat failed; retrying',
        fields: { status: 503, retryInSecs: 4.2, at: '2026-11-28T11:59:00.000Z' },
      },
    ]);
  });

  it('logs a lone object as fields with an empty message', () => {
    const written = install('json');

    new Logger('X').log({ rolloutId: 'stable@a1b2c3d4', seq: 3 });

    expect(entries(written)).toEqual([
      { time: NOW.toISOString(), level: 'info', context: 'X', message: '', fields: { rolloutId: 'stable@a1b2c3d4', seq: 3 } },
    ]);
  });

  it('writes errors to stderr with their stack, and fields next to them', () => {
    const written = install('json');
    const err = new Error('boom');

    new Logger('RecoveryService').error('handshake crashed', err.stack);
    new Logger('RecoveryService').error('handshake failed', { attempt: 2 });
    new Logger('RecoveryService').error(err);

    const [withStack, withFields, fromError] = entries(written);
    expect(withStack).toMatchObject({ level: 'error', context: 'RecoveryService', message: 'handshake crashed' });
    expect(withStack.stack).toContain('Error: boom\n    at ');
    expect(withFields).toEqual({
      time: NOW.toISOString(),
      level: 'error',
      context: 'RecoveryService',
      message: 'handshake failed',
      fields: { attempt: 2 },
    });
    expect(fromError).toMatchObject({ message: 'boom', stack: expect.stringContaining('Error: boom') });
    expect(written.map((w) => w.stream)).toEqual(['stderr', 'stderr', 'stderr']);
  });

  it('never prints a PEM block, raw bytes or a secret-named field, whatever a caller passes', () => {
    const written = install('json');

    new Logger('IdentityWatcher').warn(`cannot use ${PEM_KEY} as the client key`, {
      pem: PEM_KEY,
      keyBytes: Buffer.from('secret key bytes'),
      privateKey: 'AAAA',
      nested: { clientKeyPassphrase: 'hunter2', list: [PEM_KEY] },
      keyPath: '/etc/ssh/ssh_host_ed25519_key',
    });

    const [entry] = entries(written);
    expect(written[0].text).not.toContain('MC4CAQAwBQYDK2VwBCIEIJ');
    expect(written[0].text).not.toContain('hunter2');
    expect(entry.message).toBe('cannot use [PRIVATE KEY redacted] as the client key');
    expect(entry.fields).toEqual({
      pem: '[PRIVATE KEY redacted]',
      keyBytes: '[16 bytes]',
      privateKey: '[redacted]',
      nested: { clientKeyPassphrase: '[redacted]', list: ['[PRIVATE KEY redacted]'] },
      keyPath: '/etc/ssh/ssh_host_ed25519_key',
    });
  });

  it('cuts a long message or field, saying how much was cut, and survives cycles', () => {
    const written = install('json');
    const cyclic: Record<string, unknown> = { name: 'a' };
    cyclic.self = cyclic;

    new Logger('X').log('x'.repeat(MAX_LOGGED_CHARS + 50), { body: 'y'.repeat(MAX_LOGGED_CHARS + 1), cyclic });

    const [entry] = entries(written);
    expect(entry.message).toBe(`${'x'.repeat(MAX_LOGGED_CHARS)}... (50 more characters cut)`);
    expect(entry.fields?.body).toBe(`${'y'.repeat(MAX_LOGGED_CHARS)}... (1 more characters cut)`);
    expect(entry.fields?.cyclic).toEqual({ name: 'a', self: '[circular]' });
  });

  it('keeps to the level and turns Nest start-up narration into debug', () => {
    const atWarn = install('json', 'warn');
    new Logger('X').log('not shown');
    new Logger('X').warn('shown');
    expect(entries(atWarn).map((e) => e.message)).toEqual(['shown']);

    const atInfo = install('json', 'info');
    new Logger('InstanceLoader').log('AgentModule dependencies initialized');
    expect(atInfo).toEqual([]);

    const atDebug = install('json', 'debug');
    new Logger('InstanceLoader').log('AgentModule dependencies initialized');
    expect(entries(atDebug)).toEqual([
      { time: NOW.toISOString(), level: 'debug', context: 'InstanceLoader', message: 'AgentModule dependencies initialized' },
    ]);
  });
});

describe('AgentLogger, text', () => {
  it("prints Nest's readable line, with the fields as key=value after the message", () => {
    const written = install('text');

    new Logger('HeartbeatService').log('heartbeat every 60 s');
    new Logger('DrainerService').warn('delivery failed; retrying', { seq: 3, reason: 'HTTP 503: busy', rolloutId: 'stable@a1b2c3d4' });

    expect(written).toHaveLength(2);
    expect(written[0].text).toMatch(
      new RegExp(
        `^\\[nixfleet-agent\\] ${process.pid} {2}- 2026-11-28T12:00:00\\.123Z {5}LOG \\[HeartbeatService\\] heartbeat every 60 s\\n$`,
      ),
    );
    expect(written[1].text).toMatch(
      /WARN \[DrainerService\] delivery failed; retrying seq=3 reason="HTTP 503: busy" rolloutId=stable@a1b2c3d4\n$/,
    );
    expect(written.map((w) => w.text).join('')).not.toContain('{"');
  });

  it('prints an error and then its stack on stderr, redacted like JSON', () => {
    const written = install('text');
    const err = new Error(`bad key ${PEM_KEY}`);

    new Logger('Bootstrap').error('cannot start', err.stack);

    expect(written.map((w) => w.stream)).toEqual(['stderr', 'stderr']);
    expect(written[0].text).toMatch(/ERROR \[Bootstrap\] cannot start\n$/);
    expect(written[1].text).toMatch(/^Error: bad key \[PRIVATE KEY redacted\]\n {4}at /);
  });
});

describe('AgentLogger under journald', () => {
  const BOTH: JournalStreams = { stdout: true, stderr: true };

  it('starts each JSON line with the syslog priority of its level, and the rest stays the same JSON', () => {
    const written = install('json', 'verbose', BOTH);

    const logger = new Logger('DrainerService');
    logger.fatal('the event log is gone');
    logger.error('event delivery paused', { status: 403 });
    logger.warn('delivering seq 3 failed; retrying', { seq: 3 });
    logger.log('event delivery works again');
    logger.debug('drain run done');
    logger.verbose('nothing queued');

    expect(written.map((w) => w.text.slice(0, 3))).toEqual(['<3>', '<3>', '<4>', '<6>', '<7>', '<7>']);
    expect(written.map((w) => w.stream)).toEqual(['stdout', 'stderr', 'stdout', 'stdout', 'stdout', 'stdout']);
    const parsed = written.map((w) => JSON.parse(w.text.slice(3)) as JsonLogEntry);
    expect(parsed.map((e) => e.level)).toEqual(['fatal', 'error', 'warn', 'info', 'debug', 'verbose']);
    expect(parsed[1]).toEqual({
      time: NOW.toISOString(),
      level: 'error',
      context: 'DrainerService',
      message: 'event delivery paused',
      fields: { status: 403 },
    });
  });

  it('prefixes only the streams journald reads', () => {
    const written = install('json', 'info', { stdout: false, stderr: true });

    new Logger('X').warn('on stdout, a file');
    new Logger('X').error('on stderr, the journal');

    expect(written.map((w) => [w.stream, w.text.slice(0, 3)])).toEqual([
      ['stdout', '{"t'],
      ['stderr', '<3>'],
    ]);
  });

  it('prefixes a text line and every line of its stack, which journald takes as entries of their own', () => {
    const written = install('text', 'info', BOTH);
    const err = new Error('boom');

    new Logger('HeartbeatService').warn('heartbeat failed; retrying', { status: 503 });
    new Logger('Bootstrap').error('cannot start', err.stack);

    expect(written[0].text).toMatch(
      /^<4>\[nixfleet-agent\] \d+ {2}- 2026-11-28T12:00:00\.123Z {4}WARN \[HeartbeatService\] heartbeat failed; retrying status=503\n$/,
    );
    expect(written[1].text).toMatch(/^<3>\[nixfleet-agent\] .* ERROR \[Bootstrap\] cannot start\n$/);
    const stackLines = written[2].text.split('\n').filter((l) => l !== '');
    expect(stackLines.length).toBeGreaterThan(1);
    for (const line of stackLines) expect(line).toMatch(/^<3>(Error: boom|\s+at )/);
  });

  it('writes no prefix anywhere without journald', () => {
    const written = install('json', 'debug');

    new Logger('X').error('e');
    new Logger('X').warn('w');
    new Logger('X').debug('d');

    for (const w of written) expect(w.text.startsWith('{')).toBe(true);
  });
});

describe('journalStreams: JOURNAL_STREAM checked against the descriptors, as systemd.exec(5) says', () => {
  let dir: string;
  let out: number;
  let err: number;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-journal-'));
    out = openSync(join(dir, 'out'), 'a');
    err = openSync(join(dir, 'err'), 'a');
  });
  afterEach(() => {
    closeSync(out);
    closeSync(err);
    rmSync(dir, { recursive: true, force: true });
  });

  const devIno = (fd: number): string => {
    const st = fstatSync(fd, { bigint: true });
    return `${st.dev}:${st.ino}`;
  };

  it('finds the stream whose device and inode it names, and only that one', () => {
    expect(journalStreams(devIno(out), { stdout: out, stderr: err })).toEqual({ stdout: true, stderr: false });
    expect(journalStreams(devIno(err), { stdout: out, stderr: err })).toEqual({ stdout: false, stderr: true });
    // systemd's usual case: StandardError=inherit, both descriptors on one journal stream.
    expect(journalStreams(devIno(out), { stdout: out, stderr: out })).toEqual({ stdout: true, stderr: true });
  });

  it('finds none when the variable is unset, malformed, names another file, or a descriptor is closed', () => {
    const other = openSync(join(dir, 'other'), 'a');
    const named = devIno(other);
    closeSync(other);
    const fds = { stdout: out, stderr: err };

    expect(journalStreams(null, fds)).toEqual({ stdout: false, stderr: false });
    expect(journalStreams(named, fds)).toEqual({ stdout: false, stderr: false });
    expect(journalStreams('8:abc', fds)).toEqual({ stdout: false, stderr: false });
    expect(journalStreams(`${devIno(out)}:1`, fds)).toEqual({ stdout: false, stderr: false });
    expect(journalStreams(devIno(out), { stdout: 987_654, stderr: err })).toEqual({ stdout: false, stderr: false });
  });
});
