import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SystemdFailedUnitsSpec } from '../probe.types';
import { runSystemdFailedUnitsProbe } from './systemd-failed-units.probe';

describe('runSystemdFailedUnitsProbe', () => {
  let dir: string;
  const signal = new AbortController().signal;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-systemd-probe-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** A fake systemctl that records its arguments and prints `units` as `systemctl list-units --failed --plain --no-legend` does. */
  function systemctl(units: string[], body = ''): string {
    const path = join(dir, 'systemctl');
    const lines = units.map((u) => `${u} loaded failed failed ${u} failed to start`).join('\n');
    writeFileSync(join(dir, 'out.txt'), lines === '' ? '' : `${lines}\n`);
    writeFileSync(path, `#!/bin/sh\nprintf '%s\\n' "$@" > '${join(dir, 'args')}'\n${body}\ncat '${join(dir, 'out.txt')}'\n`, {
      mode: 0o755,
    });
    return path;
  }

  function spec(max: number, timeoutMs = 5_000): SystemdFailedUnitsSpec {
    return { kind: 'systemd-failed-units', max, timeoutMs };
  }

  it('passes with no failed unit, asking systemctl for a plain list of failed units', async () => {
    expect(await runSystemdFailedUnitsProbe(spec(0), signal, { systemctl: systemctl([]) })).toEqual({
      status: 'pass',
      durationMs: expect.any(Number),
    });
    expect(readFileSync(join(dir, 'args'), 'utf8')).toBe('list-units\n--failed\n--plain\n--no-legend\n--no-pager\n');
  });

  it('passes while the count is at most max', async () => {
    expect(
      await runSystemdFailedUnitsProbe(spec(3), signal, { systemctl: systemctl(['a.service', 'b.service', 'c.mount']) }),
    ).toMatchObject({
      status: 'pass',
    });
  });

  it('fails above max, naming the count, the max and the units', async () => {
    const fake = systemctl(['foo.service', 'bar.service', 'baz.mount']);
    expect(await runSystemdFailedUnitsProbe(spec(0), signal, { systemctl: fake })).toEqual({
      status: 'fail',
      failureReason: '3 failed units, at most 0 allowed: foo.service, bar.service, baz.mount',
      durationMs: expect.any(Number),
    });
  });

  it('says "1 failed unit" for one', async () => {
    expect((await runSystemdFailedUnitsProbe(spec(0), signal, { systemctl: systemctl(['foo.service']) })).failureReason).toBe(
      '1 failed unit, at most 0 allowed: foo.service',
    );
  });

  it('names the first five units and counts the rest', async () => {
    const units = ['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((u) => `${u}.service`);
    expect((await runSystemdFailedUnitsProbe(spec(1), signal, { systemctl: systemctl(units) })).failureReason).toBe(
      '7 failed units, at most 1 allowed: a.service, b.service, c.service, d.service, e.service and 2 more',
    );
  });

  it('fails when systemctl fails, with its stderr', async () => {
    const fake = systemctl([], 'echo "Failed to connect to bus: No such file or directory" >&2; exit 1');
    expect((await runSystemdFailedUnitsProbe(spec(0), signal, { systemctl: fake })).failureReason).toBe(
      `${fake} list-units --failed exited with code 1: Failed to connect to bus: No such file or directory`,
    );
  });

  it('fails when systemctl cannot be started', async () => {
    const missing = join(dir, 'no-systemctl');
    expect((await runSystemdFailedUnitsProbe(spec(0), signal, { systemctl: missing })).failureReason).toBe(
      `${missing} list-units --failed could not be started (ENOENT: spawn ${missing} ENOENT)`,
    );
  });

  it('fails when systemctl hangs past the timeout', async () => {
    const fake = systemctl([], 'sleep 30');
    const outcome = await runSystemdFailedUnitsProbe(spec(0, 300), signal, { systemctl: fake, killGraceMs: 200 });
    expect(outcome.failureReason).toBe(`${fake} list-units --failed timed out after 300 ms and was killed by SIGTERM`);
  });

  it('resolves promptly as cancelled when its signal aborts', async () => {
    const controller = new AbortController();
    const running = runSystemdFailedUnitsProbe(spec(0, 60_000), controller.signal, {
      systemctl: systemctl([], "trap '' TERM; sleep 30"),
      killGraceMs: 200,
    });
    setTimeout(() => controller.abort(), 100);
    const outcome = await running;
    expect(outcome).toMatchObject({ status: 'fail', failureReason: 'cancelled' });
    expect(outcome.durationMs).toBeLessThan(5_000);
  });
});
