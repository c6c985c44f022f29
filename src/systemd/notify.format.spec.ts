import {
  failureCause,
  notifyDatagram,
  notifyTarget,
  STATUS_MAX_CHARS,
  statusLine,
  SUN_PATH_MAX_BYTES,
  watchdogPeriodMs,
} from './notify.format';

describe('notifyDatagram', () => {
  it('writes one KEY=value assignment per line, in the order given', () => {
    expect(notifyDatagram([{ kind: 'ready' }, { kind: 'status', text: 'heartbeat ok 1 s ago' }])).toBe(
      'READY=1\nSTATUS=heartbeat ok 1 s ago',
    );
    expect(notifyDatagram([{ kind: 'watchdog' }])).toBe('WATCHDOG=1');
    expect(notifyDatagram([{ kind: 'stopping' }, { kind: 'status', text: 'stopping' }])).toBe('STOPPING=1\nSTATUS=stopping');
  });

  it('keeps STATUS= on one line: a newline in the text must not start a second assignment', () => {
    const datagram = notifyDatagram([{ kind: 'status', text: 'cannot connect:\nREADY=1\r\n\tretrying' }]);
    expect(datagram.split('\n')).toEqual(['STATUS=cannot connect: READY=1 retrying']);
  });

  it('cuts an overlong STATUS= text with an ellipsis', () => {
    const line = notifyDatagram([{ kind: 'status', text: 'x'.repeat(1000) }]);
    expect(line).toHaveLength('STATUS='.length + STATUS_MAX_CHARS);
    expect(line.endsWith('…')).toBe(true);
  });
});

describe('notifyTarget', () => {
  it('takes an absolute path as is', () => {
    expect(notifyTarget('/run/systemd/notify')).toEqual({ kind: 'path', address: '/run/systemd/notify' });
  });

  it('maps a leading @ to the NUL byte of the abstract namespace', () => {
    expect(notifyTarget('@/org/freedesktop/systemd1/notify')).toEqual({
      kind: 'abstract',
      address: '\0/org/freedesktop/systemd1/notify',
    });
  });

  it('refuses a path longer than sun_path holds rather than have it cut silently', () => {
    expect(notifyTarget(`/${'a'.repeat(SUN_PATH_MAX_BYTES - 1)}`).kind).toBe('path');
    expect(notifyTarget(`/${'a'.repeat(SUN_PATH_MAX_BYTES)}`)).toMatchObject({ kind: 'unsupported', reason: /longer than/ });
  });

  it('refuses relative paths, a bare @ and vsock addresses', () => {
    expect(notifyTarget('run/notify')).toMatchObject({ kind: 'unsupported', reason: /absolute path or an @abstract name/ });
    expect(notifyTarget('@').kind).toBe('unsupported');
    expect(notifyTarget('vsock:2:1234')).toMatchObject({ kind: 'unsupported', reason: /AF_VSOCK/ });
  });
});

describe('statusLine', () => {
  const running = {
    phase: 'running' as const,
    controlPlane: { kind: 'ok' as const, lastSuccessSecsAgo: 12.7, failuresSince: 0, cause: null },
    eventLogFailing: null,
    pendingEvents: 0,
    activeRollouts: [],
    notLive: [],
  };

  it('says when the last heartbeat went through, the backlog and the rollouts in flight', () => {
    expect(statusLine(running)).toBe('heartbeat ok 12 s ago; no events pending');
    expect(statusLine({ ...running, pendingEvents: 1, activeRollouts: ['Soaking'] })).toBe(
      'heartbeat ok 12 s ago; 1 event pending; 1 rollout Soaking',
    );
    expect(statusLine({ ...running, pendingEvents: 3, activeRollouts: ['Soaking', 'Activating', 'Soaking'] })).toBe(
      'heartbeat ok 12 s ago; 3 events pending; 3 rollouts: 1 Activating, 2 Soaking',
    );
    expect(statusLine({ ...running, activeRollouts: ['Pending', 'Pending'] })).toBe(
      'heartbeat ok 12 s ago; no events pending; 2 rollouts Pending',
    );
  });

  it('names failures since the last success while the CP still counts the host as reachable', () => {
    const cp = { kind: 'ok' as const, lastSuccessSecsAgo: 70, failuresSince: 1, cause: 'HTTP 503' };
    expect(statusLine({ ...running, controlPlane: cp })).toBe(
      'heartbeat ok 70 s ago (1 failed attempt since: HTTP 503); no events pending',
    );
  });

  it('says how long the control plane has been unreachable and why', () => {
    expect(statusLine({ ...running, controlPlane: { kind: 'unreachable', forSecs: 185, cause: 'HTTP 503' }, pendingEvents: 4 })).toBe(
      'control plane unreachable for 3 min (HTTP 503); 4 events pending',
    );
    expect(statusLine({ ...running, controlPlane: { kind: 'unreachable', forSecs: 5, cause: null } })).toBe(
      'control plane unreachable for 5 s; no events pending',
    );
  });

  it('puts a failing liveness check first, since the watchdog will act on it', () => {
    const line = statusLine({ ...running, notLive: [{ name: 'heartbeat-job', detail: 'a heartbeat has been in flight for 20 s' }] });
    expect(line).toBe(
      'NOT LIVE, watchdog pings withheld: heartbeat-job: a heartbeat has been in flight for 20 s; heartbeat ok 12 s ago; no events pending',
    );
  });

  it('says that event-log writes fail, for how long and why, before the control plane', () => {
    expect(statusLine({ ...running, eventLogFailing: { forSecs: 185, cause: 'ENOSPC' }, pendingEvents: 2 })).toBe(
      'DEGRADED: event log writes failing for 3 min (ENOSPC); heartbeat ok 12 s ago; 2 events pending',
    );
    expect(statusLine({ ...running, eventLogFailing: { forSecs: 0, cause: null } })).toBe(
      'DEGRADED: event log writes failing for 0 s; heartbeat ok 12 s ago; no events pending',
    );
    const notLive = [{ name: 'reducer' as const, detail: '1 input(s) queued but none taken for 31 s' }];
    expect(statusLine({ ...running, notLive, eventLogFailing: { forSecs: 5, cause: 'EIO' } })).toMatch(
      /^NOT LIVE, watchdog pings withheld: reducer: .*; DEGRADED: event log writes failing for 5 s \(EIO\); heartbeat ok/,
    );
  });

  it('describes the boot handshake and the stop', () => {
    expect(statusLine({ phase: 'booting', waitedSecs: 3.2, pendingEvents: 2 })).toBe(
      'boot recovery: waiting for the handshake with the control plane (3 s); 2 events pending',
    );
    expect(statusLine({ phase: 'stopping' })).toBe('stopping: finishing in-flight work');
  });
});

describe('failureCause', () => {
  it('keeps the HTTP status and shortens the other kinds', () => {
    expect(failureCause('http-status', 'HTTP 503: service unavailable')).toBe('HTTP 503');
    expect(failureCause('connect', 'cannot connect: ECONNREFUSED 127.0.0.1:1')).toBe('cannot connect');
    expect(failureCause('timeout', 'timed out: no answer within 10 s')).toBe('timed out');
    expect(failureCause('tls', 'TLS handshake failed: x')).toBe('TLS handshake failed');
  });
});

describe('watchdogPeriodMs', () => {
  it('is half of WATCHDOG_USEC, in milliseconds', () => {
    expect(watchdogPeriodMs(60_000_000)).toBe(30_000);
    expect(watchdogPeriodMs(2_000_000)).toBe(1_000);
    expect(watchdogPeriodMs(1)).toBe(1);
  });
});
