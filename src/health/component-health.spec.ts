import {
  type DeliveryInput,
  type DispatchPollInput,
  type EventLogInput,
  type HeartbeatInput,
  type IdentityInput,
  judgeActivationBackend,
  judgeDelivery,
  judgeDispatchPoll,
  judgeEventLog,
  judgeHeartbeat,
  judgeIdentity,
} from './component-health';

const SINCE = '2026-11-28T11:59:20.000Z';
const ENOSPC = 'ENOSPC: no space left on device, write';

describe('judgeEventLog', () => {
  const healthy: EventLogInput = {
    path: '/var/lib/nixfleet-agent/events.log',
    failingSince: null,
    failuresInStreak: 0,
    lastCause: null,
    refusingWrites: null,
    probeEverySecs: 5,
    clearedBy: null,
    events: 12,
    bytes: 4096,
  };

  it('is ok while appends work', () => {
    expect(judgeEventLog(healthy)).toEqual({ state: 'ok', detail: 'appends work; 12 event(s), 4096 bytes', since: null });
  });

  it('is failing from the first failed write, with the cause, the count and since when, and says it clears on its own', () => {
    const c = judgeEventLog({ ...healthy, failingSince: SINCE, failuresInStreak: 3, lastCause: ENOSPC, clearedBy: 'probe' });

    expect(c.state).toBe('failing');
    expect(c.since).toBe(SINCE);
    expect(c.detail).toBe(
      `writes to /var/lib/nixfleet-agent/events.log fail (3 in a row): ${ENOSPC}; new events cannot be made durable, so none is sent and no rollout moves; a write probe runs every 5 s and this clears on its own once writes work`,
    );
  });

  it('says only an append clears a cause a probe beside the log cannot rule out (EIO on the log itself)', () => {
    const c = judgeEventLog({
      ...healthy,
      failingSince: SINCE,
      failuresInStreak: 1,
      lastCause: 'EIO: i/o error, fdatasync',
      clearedBy: 'append',
    });

    expect(c.detail).toBe(
      'writes to /var/lib/nixfleet-agent/events.log fail (1 in a row): EIO: i/o error, fdatasync; new events cannot be made durable, so none is sent and no rollout moves; this clears once an append to the log works (held work is retried); a probe beside the log cannot rule this cause out',
    );
  });

  it('says a restart is needed when the log refuses writes until reopened', () => {
    const c = judgeEventLog({
      ...healthy,
      failingSince: SINCE,
      failuresInStreak: 1,
      lastCause: 'EIO',
      refusingWrites: 'append failed (EIO), cutting back failed (EIO)',
    });

    expect(c).toMatchObject({ state: 'failing', since: SINCE });
    expect(c.detail).toMatch(
      /refuses every write: append failed \(EIO\), cutting back failed \(EIO\); .*restart the agent once the disk takes writes/,
    );
  });
});

describe('judgeDelivery', () => {
  const idle: DeliveryInput = {
    pending: 0,
    oldestPendingAgeSecs: null,
    pausedReason: null,
    consecutiveFailures: 0,
    lastError: null,
    failingSince: null,
    started: true,
  };

  it('is ok with nothing pending, or with a backlog that is being sent', () => {
    expect(judgeDelivery(idle)).toEqual({ state: 'ok', detail: 'nothing pending', since: null });
    expect(judgeDelivery({ ...idle, pending: 2, oldestPendingAgeSecs: 3.7 })).toEqual({
      state: 'ok',
      detail: '2 event(s) pending (oldest 3 s old), sending',
      since: null,
    });
    expect(judgeDelivery({ ...idle, pending: 1, started: false }).detail).toBe('1 event(s) pending, sent once boot recovery is over');
  });

  it('warns while POSTs fail and are retried', () => {
    expect(judgeDelivery({ ...idle, pending: 4, consecutiveFailures: 2, lastError: 'HTTP 503: busy', failingSince: SINCE })).toEqual({
      state: 'warning',
      detail: '4 event(s) pending; the last POST failed (2 in a row): HTTP 503: busy; retried with backoff, same seq',
      since: SINCE,
    });
  });

  it('is failing while paused: the CP refuses the identity or version', () => {
    const c = judgeDelivery({ ...idle, pending: 1, consecutiveFailures: 1, pausedReason: 'HTTP 403: forbidden', failingSince: SINCE });
    expect(c).toEqual({ state: 'failing', detail: 'paused: HTTP 403: forbidden', since: SINCE });
  });
});

describe('judgeDispatchPoll', () => {
  const polling: DispatchPollInput = {
    polling: true,
    consecutiveFailures: 0,
    lastError: null,
    failingSince: null,
    failingForSecs: null,
    lastPollAgeSecs: 12,
    thresholdSecs: 180,
    held: null,
  };

  it('is ok while polls are answered, and before it starts', () => {
    expect(judgeDispatchPoll(polling)).toEqual({ state: 'ok', detail: 'waiting for a dispatch; last answer 12 s ago', since: null });
    expect(judgeDispatchPoll({ ...polling, lastPollAgeSecs: null }).detail).toBe('waiting for a dispatch');
    expect(judgeDispatchPoll({ ...polling, polling: false, lastPollAgeSecs: null }).detail).toMatch(/^not polling yet/);
  });

  it('warns at once on a failed poll, and is failing once the failures last past the threshold', () => {
    const failed = { ...polling, consecutiveFailures: 2, lastError: 'HTTP 404: not found', failingSince: SINCE, failingForSecs: 180 };
    expect(judgeDispatchPoll(failed)).toEqual({
      state: 'warning',
      detail: 'polls fail (2 in a row, for 3 min): HTTP 404: not found; no dispatch can arrive meanwhile; polling again with backoff',
      since: SINCE,
    });
    expect(judgeDispatchPoll({ ...failed, failingForSecs: 181 }).state).toBe('failing');
  });

  it('is failing at once while an order is held because its events cannot be made durable, dated from its receipt', () => {
    const held = {
      rolloutId: 'stable@a1b2c3d4',
      receivedAt: SINCE,
      attempts: 3,
      lastError: 'Activate for stable@a1b2c3d4 not applied: its events could not be made durable (ENOSPC)',
    };
    expect(judgeDispatchPoll({ ...polling, held })).toEqual({
      state: 'failing',
      detail:
        'the dispatch for stable@a1b2c3d4 is held, not applied (3 attempt(s)): Activate for stable@a1b2c3d4 not applied: its events could not be made durable (ENOSPC); it is applied once the event log takes writes; no new poll meanwhile',
      since: SINCE,
    });
  });
});

describe('judgeActivationBackend', () => {
  it('warns, naming each missing piece, and is ok when all is there', () => {
    const missing = ['nix-env (sets the system profile) is not found on PATH (/usr/bin:/bin)', 'the store dir /nix/store does not exist'];

    expect(judgeActivationBackend({ backend: 'nixos', problems: missing, checkedAt: SINCE })).toEqual({
      state: 'warning',
      detail: `nixos backend cannot activate: ${missing.join('; ')}; a dispatch would fail with ActivationFailed (checked at start)`,
      since: SINCE,
    });
    expect(judgeActivationBackend({ backend: 'symlink', problems: [], checkedAt: SINCE })).toEqual({
      state: 'ok',
      detail: 'symlink backend: everything it runs is there (checked at start)',
      since: null,
    });
    expect(judgeActivationBackend({ backend: 'nixos', problems: [], checkedAt: null }).detail).toBe('nixos backend: not checked yet');
  });
});

describe('judgeIdentity', () => {
  const DAY = 86_400;
  const valid: IdentityInput = {
    configured: true,
    cn: 'web-01',
    validity: 'valid',
    notBefore: '2026-10-01T00:00:00.000Z',
    notAfter: '2027-10-01T00:00:00.000Z',
    secondsToExpiry: 300 * DAY,
    lastReloadError: null,
    expiringDays: 7,
  };

  it('warns when no client certificate is configured: not silence', () => {
    const c = judgeIdentity({ ...valid, configured: false, cn: null, validity: null, secondsToExpiry: null });
    expect(c.state).toBe('warning');
    expect(c.detail).toMatch(/^no client certificate configured \(--client-cert and --client-key\)/);
  });

  it('is ok with a valid certificate, and failing when it expires within the week or has expired', () => {
    expect(judgeIdentity(valid)).toEqual({ state: 'ok', detail: 'client certificate CN web-01, expires in 300 days', since: null });
    expect(judgeIdentity({ ...valid, validity: 'expiring', secondsToExpiry: 2 * DAY })).toEqual({
      state: 'failing',
      detail: 'client certificate CN web-01 expires in 2 days; renew it (renewed files are taken without a restart)',
      since: '2027-09-24T00:00:00.000Z',
    });
    expect(judgeIdentity({ ...valid, validity: 'expired', secondsToExpiry: -60 })).toMatchObject({
      state: 'failing',
      since: valid.notAfter,
      detail: expect.stringMatching(/expired 60 s ago; the control plane refuses it/),
    });
  });

  it('warns about a certificate not yet valid and about renewed files it could not take', () => {
    expect(judgeIdentity({ ...valid, validity: 'not-yet-valid' })).toMatchObject({
      state: 'warning',
      detail: expect.stringMatching(/not valid before 2026-10-01/),
    });
    expect(judgeIdentity({ ...valid, lastReloadError: 'client identity files changed but cannot be used: x' })).toEqual({
      state: 'warning',
      detail: 'client identity files changed but cannot be used: x',
      since: null,
    });
  });
});

describe('judgeHeartbeat', () => {
  const reachable: HeartbeatInput = {
    reachable: true,
    thresholdSecs: 180,
    lastSuccessAgeSecs: 7,
    failingForSecs: null,
    consecutiveFailures: 0,
    lastError: null,
    failingSince: null,
  };

  it('is ok after a success', () => {
    expect(judgeHeartbeat(reachable)).toEqual({ state: 'ok', detail: 'last heartbeat 7 s ago', since: null });
  });

  it('warns at once when the last attempt failed, with why and since when, while the CP still counts it reachable', () => {
    expect(
      judgeHeartbeat({ ...reachable, consecutiveFailures: 1, lastError: 'HTTP 503: {"error":"maintenance"}', failingSince: SINCE }),
    ).toEqual({
      state: 'warning',
      detail:
        'the last attempt failed: HTTP 503: {"error":"maintenance"} (1 failure(s) in a row); last success 7 s ago, unreachable after 3 min',
      since: SINCE,
    });
  });

  it('is failing past 3 intervals, and before any heartbeat was answered', () => {
    expect(
      judgeHeartbeat({
        ...reachable,
        reachable: false,
        lastSuccessAgeSecs: 200,
        failingForSecs: 200,
        consecutiveFailures: 5,
        lastError: 'cannot connect: ECONNREFUSED',
        failingSince: SINCE,
      }),
    ).toEqual({
      state: 'failing',
      detail:
        'control plane unreachable for 3 min (past 3 min): cannot connect: ECONNREFUSED (5 failure(s) in a row); retrying with backoff',
      since: SINCE,
    });
    expect(judgeHeartbeat({ ...reachable, reachable: false, lastSuccessAgeSecs: null, failingForSecs: 3, failingSince: SINCE })).toEqual({
      state: 'failing',
      detail: 'no heartbeat answered yet for 3 s',
      since: SINCE,
    });
  });
});
