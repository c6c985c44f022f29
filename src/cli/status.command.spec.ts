import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CERT_EXPIRY_WARNING_DAYS } from '../clock/thresholds';
import { helpText } from '../config/config.loader';
import { COMPONENT_LABELS } from '../health/component-health';
import {
  assess,
  fitToTerminal,
  formatSeqs,
  JUDGED_BY_COMPONENT,
  type Readyz,
  readyzOf,
  runStatusCommand,
  STATUS_EXIT,
  summarize,
  type TerminalSize,
  TTY_ERASE_BELOW,
  TTY_ERASE_LINE,
  TTY_HOME,
  watchFrame,
  watchStatus,
} from './status.command';

type Json = Record<string, unknown>;

const NOW = new Date('2026-11-28T12:00:00.000Z');
const DAY = 86_400;
const READY: Readyz = { kind: 'ready', lastSuccessAt: '2026-11-28T11:59:48.000Z' };
const CLOSURE = `${'a'.repeat(32)}-nixos-system-web-01-26.05`;

function secondsBefore(secs: number): string {
  return new Date(NOW.getTime() - secs * 1000).toISOString();
}

/** A healthy agent's /status, as the controller writes it; `patch` replaces top-level blocks. */
function statusDoc(patch: Json = {}): Json {
  return {
    machineId: 'web-01',
    agentVersion: '0.1.0',
    controlPlaneUrl: 'https://cp.fleet.test:8443',
    pid: 4242,
    startedAt: secondsBefore(600),
    uptimeSecs: 600,
    currentClosure: CLOSURE,
    heartbeat: {
      intervalSecs: 60,
      lastAttemptAt: secondsBefore(12),
      lastSuccessAt: secondsBefore(12),
      lastError: null,
      consecutiveFailures: 0,
      nextDueAt: secondsBefore(-48),
      lastReplayFrom: null,
      clockSkewSecs: 0,
      inFlight: false,
      skippedTicks: 0,
    },
    recovery: { completedAt: secondsBefore(599), reachedControlPlane: true, snapshotsApplied: 1 },
    rollouts: [
      {
        rolloutId: 'stable@a1b2c3d4',
        channel: 'stable',
        state: 'Converged',
        targetClosure: CLOSURE,
        lastEventSeq: 5,
        lastDeliveredSeq: 5,
      },
    ],
    outbound: {
      pending: 0,
      delivered: 5,
      refused: 0,
      oldestPendingAgeSecs: null,
      lastDeliveredAt: secondsBefore(30),
      deliveryPausedReason: null,
      replay: { running: false, rolloutId: null, fromSeq: null, resent: 0, missing: [] },
      logBytes: 2048,
    },
    activation: { backend: 'nixos', running: null, queued: 0, lastResult: null },
    certificate: {
      cn: 'web-01',
      machineId: 'web-01',
      keyType: 'ed25519',
      notBefore: secondsBefore(30 * DAY),
      notAfter: secondsBefore(-300 * DAY),
      validity: 'valid',
      secondsToExpiry: 300 * DAY,
      daysToExpiry: 300,
      fingerprint256: 'AB:CD',
      lastReloadAt: null,
      lastReloadError: null,
    },
    ...patch,
  };
}

function withBlock(block: 'heartbeat' | 'outbound' | 'certificate' | 'activation', patch: Json): Json {
  const doc = statusDoc();
  return { ...doc, [block]: { ...(doc[block] as Json), ...patch } };
}

const unreachable = (o: Partial<Extract<Readyz, { kind: 'unreachable' }>> = {}): Readyz => ({
  kind: 'unreachable',
  lastError: 'HTTP 503: {"error":"maintenance"}',
  failingForSecs: 240,
  lastSuccessAt: secondsBefore(240),
  consecutiveFailures: 4,
  ...o,
});

describe('assess', () => {
  it('is healthy when /readyz is ready, delivery runs and the certificate has months left', () => {
    const a = assess(statusDoc(), READY, NOW);

    expect(a.exit).toBe(STATUS_EXIT.healthy);
    expect(a.problems).toEqual([]);
    expect(a.warnings).toEqual([]);
    expect(a.reachability).toEqual({ kind: 'reachable', lastHeartbeatAgeSecs: 12 });
  });

  it('is degraded when /readyz says the control plane is unreachable, whatever /status holds', () => {
    const a = assess(statusDoc(), unreachable(), NOW);

    expect(a.exit).toBe(STATUS_EXIT.degraded);
    expect(a.problems).toEqual([{ kind: 'cp-unreachable', forSecs: 240 }]);
    expect(a.reachability).toEqual({
      kind: 'unreachable',
      forSecs: 240,
      lastError: 'HTTP 503: {"error":"maintenance"}',
      consecutiveFailures: 4,
    });
  });

  it('fills what a 503 from /readyz leaves out from the heartbeat block', () => {
    const status = withBlock('heartbeat', {
      lastSuccessAt: secondsBefore(400),
      lastError: { kind: 'connect', message: 'cannot connect: ECONNREFUSED', at: secondsBefore(5) },
      consecutiveFailures: 7,
    });
    const a = assess(
      status,
      { kind: 'unreachable', lastError: null, failingForSecs: null, lastSuccessAt: null, consecutiveFailures: null },
      NOW,
    );

    expect(a.reachability).toEqual({
      kind: 'unreachable',
      forSecs: 400,
      lastError: 'cannot connect: ECONNREFUSED',
      consecutiveFailures: 7,
    });
  });

  describe('without /readyz (404), by its rule on the heartbeat block', () => {
    it('is reachable with a success within three intervals', () => {
      const a = assess(withBlock('heartbeat', { intervalSecs: 10, lastSuccessAt: secondsBefore(30) }), { kind: 'absent' }, NOW);

      expect(a.reachability).toEqual({ kind: 'reachable', lastHeartbeatAgeSecs: 30 });
      expect(a.exit).toBe(STATUS_EXIT.healthy);
      expect(a.warnings).toEqual([]);
    });

    it('is unreachable past three intervals, for as long as the last success is old', () => {
      const a = assess(
        withBlock('heartbeat', {
          intervalSecs: 10,
          lastSuccessAt: secondsBefore(31),
          consecutiveFailures: 2,
          lastError: { kind: 'http-status', message: 'HTTP 503: no body', at: secondsBefore(1) },
        }),
        { kind: 'absent' },
        NOW,
      );

      expect(a.reachability).toEqual({ kind: 'unreachable', forSecs: 31, lastError: 'HTTP 503: no body', consecutiveFailures: 2 });
      expect(a.exit).toBe(STATUS_EXIT.degraded);
    });

    it('is unreachable since start when no heartbeat ever succeeded', () => {
      const a = assess(withBlock('heartbeat', { lastSuccessAt: null, consecutiveFailures: 1 }), { kind: 'absent' }, NOW);

      expect(a.reachability).toMatchObject({ kind: 'unreachable', forSecs: 600, lastError: null });
    });

    it('warns, and stays healthy, when neither /readyz nor a heartbeat block says anything', () => {
      const a = assess(statusDoc({ heartbeat: undefined }), { kind: 'absent' }, NOW);

      expect(a.reachability.kind).toBe('unknown');
      expect(a.exit).toBe(STATUS_EXIT.healthy);
      expect(a.warnings).toEqual([{ kind: 'readiness-unknown', why: 'the agent reports neither /readyz nor its heartbeat' }]);
    });
  });

  it('judges from the heartbeat, with a warning, when /readyz answers something unexpected', () => {
    const a = assess(statusDoc(), { kind: 'unknown', why: '/readyz answered HTTP 500' }, NOW);

    expect(a.reachability).toEqual({ kind: 'reachable', lastHeartbeatAgeSecs: 12 });
    expect(a.warnings).toEqual([{ kind: 'readiness-unknown', why: '/readyz answered HTTP 500; judged from the last heartbeat instead' }]);
    expect(a.exit).toBe(STATUS_EXIT.healthy);
  });

  it('is degraded while event delivery is paused', () => {
    const reason = "HTTP 403: forbidden: the control plane does not accept this agent's identity or version; events are kept and retried";
    const a = assess(withBlock('outbound', { deliveryPausedReason: reason, pending: 3 }), READY, NOW);

    expect(a.exit).toBe(STATUS_EXIT.degraded);
    expect(a.problems).toEqual([{ kind: 'delivery-paused', reason }]);
  });

  describe('certificate expiry', () => {
    it.each([
      ['6.99 days left', true, { secondsToExpiry: 7 * DAY - 1 }],
      ['exactly 7 days left', false, { secondsToExpiry: 7 * DAY }],
      ['expired', true, { secondsToExpiry: -DAY, validity: 'expired' }],
      ['only notAfter, 3 days ahead', true, { secondsToExpiry: undefined, daysToExpiry: undefined, notAfter: secondsBefore(-3 * DAY) }],
      ['only notAfter, 8 days ahead', false, { secondsToExpiry: undefined, daysToExpiry: undefined, notAfter: secondsBefore(-8 * DAY) }],
      ['only whole days: 6', true, { secondsToExpiry: undefined, notAfter: undefined, daysToExpiry: 6 }],
      ['only whole days: 7', false, { secondsToExpiry: undefined, notAfter: undefined, daysToExpiry: 7 }],
      ['no expiry at all', false, { secondsToExpiry: undefined, notAfter: undefined, daysToExpiry: undefined }],
    ])('with %s: degraded %s', (_what, degraded, patch) => {
      const a = assess(withBlock('certificate', patch), READY, NOW);

      expect(a.problems.some((p) => p.kind === 'certificate-expiring')).toBe(degraded);
      expect(a.exit).toBe(degraded ? STATUS_EXIT.degraded : STATUS_EXIT.healthy);
    });

    it('takes a missing certificate block as not known, not as a problem', () => {
      expect(assess(statusDoc({ certificate: undefined }), READY, NOW).exit).toBe(STATUS_EXIT.healthy);
      expect(assess(statusDoc({ certificate: null }), READY, NOW).exit).toBe(STATUS_EXIT.healthy);
    });

    it('warns about a certificate not valid yet and about renewed files it could not take', () => {
      const a = assess(
        withBlock('certificate', { validity: 'not-yet-valid', lastReloadError: 'the new key does not match the certificate' }),
        READY,
        NOW,
      );

      expect(a.warnings).toEqual([
        { kind: 'certificate-not-yet-valid', notBefore: secondsBefore(30 * DAY) },
        { kind: 'certificate-reload-failed', error: 'the new key does not match the certificate' },
      ]);
      expect(a.exit).toBe(STATUS_EXIT.healthy);
    });
  });

  it('names every problem at once', () => {
    const status = { ...withBlock('outbound', { deliveryPausedReason: 'TLS handshake failed: bad certificate' }) };
    status.certificate = { ...(status.certificate as Json), secondsToExpiry: 2 * DAY };
    const a = assess(status, unreachable(), NOW);

    expect(a.problems.map((p) => p.kind)).toEqual(['cp-unreachable', 'delivery-paused', 'certificate-expiring']);
  });

  it('warns, without degrading, about refused events, seqs a replay could not resend, a failed activation and clock skew', () => {
    const status = withBlock('outbound', {
      refused: 2,
      replay: { running: false, rolloutId: 'stable@a1b2c3d4', fromSeq: 1, resent: 3, missing: [2, 3, 4, 7] },
    });
    status.activation = {
      backend: 'command',
      running: null,
      queued: 0,
      lastResult: {
        rolloutId: 'stable@a1b2c3d4',
        kind: 'switch',
        outcome: 'failed',
        exitCode: 3,
        at: secondsBefore(60),
        detail: 'activation command /bin/activate exited with code 3\nerror: unit foo.service failed',
      },
    };
    status.heartbeat = { ...(status.heartbeat as Json), clockSkewSecs: -45 };
    const a = assess(status, READY, NOW);

    expect(a.exit).toBe(STATUS_EXIT.healthy);
    expect(a.warnings).toEqual([
      { kind: 'events-refused', count: 2 },
      { kind: 'replay-missing', rolloutId: 'stable@a1b2c3d4', seqs: [2, 3, 4, 7] },
      {
        kind: 'activation-failed',
        rolloutId: 'stable@a1b2c3d4',
        activation: 'switch',
        exitCode: 3,
        detail: 'activation command /bin/activate exited with code 3',
      },
      { kind: 'clock-skew', secs: -45 },
    ]);
  });

  describe('per-component health', () => {
    const ok = (detail: string): Json => ({ state: 'ok', detail, since: null });
    const components = (patch: Json = {}): Json => ({
      eventLog: ok('appends work; 5 event(s), 2048 bytes'),
      delivery: ok('nothing pending'),
      dispatchPoll: ok('waiting for a dispatch; last answer 3 s ago'),
      activationBackend: ok('nixos backend: everything it runs is there (checked at start)'),
      identity: ok('client certificate CN web-01, expires in 300 days'),
      heartbeat: ok('last heartbeat 12 s ago'),
      ...patch,
    });
    const eventLogFailing = {
      state: 'failing',
      detail:
        'writes to /var/lib/nixfleet-agent/events.log fail (2 in a row): ENOSPC: no space left on device, write; new events cannot be made durable',
      since: secondsBefore(40),
    };

    it('is degraded while the event log fails, though /readyz says the control plane is reachable', () => {
      const a = assess(statusDoc({ components: components({ eventLog: eventLogFailing }) }), READY, NOW);

      expect(a.exit).toBe(STATUS_EXIT.degraded);
      expect(a.problems).toEqual([
        { kind: 'component-failing', component: 'eventLog', detail: eventLogFailing.detail, since: secondsBefore(40) },
      ]);
      expect(a.reachability).toEqual({ kind: 'reachable', lastHeartbeatAgeSecs: 12 });
    });

    it('is degraded by a failing dispatch poll, not by warnings (the activation backend only ever warns); heartbeat, delivery and identity keep their own checks', () => {
      const warn = { state: 'warning', detail: 'x', since: null };
      expect(
        assess(statusDoc({ components: components({ dispatchPoll: { state: 'failing', detail: 'polls fail', since: null } }) }), READY, NOW)
          .problems,
      ).toEqual([{ kind: 'component-failing', component: 'dispatchPoll', detail: 'polls fail', since: null }]);
      const warned = assess(
        statusDoc({
          components: components({ dispatchPoll: warn, activationBackend: warn, identity: warn, delivery: warn, heartbeat: warn }),
        }),
        READY,
        NOW,
      );
      expect(warned.exit).toBe(STATUS_EXIT.healthy);
      // The agent's heartbeat component failing is /readyz's call, already made: not a second problem.
      const failingHeartbeat = { state: 'failing', detail: 'unreachable', since: null };
      expect(assess(statusDoc({ components: components({ heartbeat: failingHeartbeat }) }), unreachable(), NOW).problems).toEqual([
        { kind: 'cp-unreachable', forSecs: 240 },
      ]);
    });

    it('drops a component it cannot read, and has none from an agent that reports none', () => {
      const a = assess(
        statusDoc({ components: { eventLog: { state: 'on fire', detail: 'x' }, delivery: ok('nothing pending') } }),
        READY,
        NOW,
      );
      expect(a.components).toEqual({ delivery: { state: 'ok', detail: 'nothing pending', since: null } });
      expect(assess(statusDoc(), READY, NOW).components).toBeNull();
    });

    it('prints a row per component, with since when and how long ago for trouble', () => {
      const status = statusDoc({
        components: components({
          eventLog: eventLogFailing,
          activationBackend: {
            state: 'warning',
            detail: 'nixos backend cannot activate: the store dir /nix/store does not exist',
            since: secondsBefore(600),
          },
        }),
      });
      const lines = summarize(status, assess(status, READY, NOW), NOW).split('\n');

      expect(lines[0]).toBe('web-01 (nixfleet-agent 0.1.0, pid 4242, up 10 min): DEGRADED: event log failing');
      expect(lines.slice(7)).toEqual([
        `  event log     FAILING since ${secondsBefore(40)} (40 s ago): ${eventLogFailing.detail}`,
        '  delivery      ok: nothing pending',
        '  dispatch poll ok: waiting for a dispatch; last answer 3 s ago',
        `  activation    WARNING since ${secondsBefore(600)} (10 min ago): nixos backend cannot activate: the store dir /nix/store does not exist`,
        '  identity      ok: client certificate CN web-01, expires in 300 days',
        '  heartbeat     ok: last heartbeat 12 s ago',
      ]);
    });
  });

  describe('a failed heartbeat attempt while the control plane still counts as reachable', () => {
    const failedOnce = withBlock('heartbeat', {
      lastAttemptAt: secondsBefore(2),
      lastSuccessAt: secondsBefore(7),
      consecutiveFailures: 1,
      failingSince: secondsBefore(2),
      lastError: { kind: 'http-status', message: 'HTTP 503: {"error":"maintenance"}', at: secondsBefore(2) },
    });

    it('is still healthy, and says at once that the last attempt failed, why and since when', () => {
      const a = assess(failedOnce, { kind: 'ready', lastSuccessAt: secondsBefore(7) }, NOW);

      expect(a.exit).toBe(STATUS_EXIT.healthy);
      expect(a.reachability).toEqual({
        kind: 'reachable',
        lastHeartbeatAgeSecs: 7,
        lastAttemptFailed: { error: 'HTTP 503: {"error":"maintenance"}', failingSince: secondsBefore(2), consecutiveFailures: 1 },
      });
      expect(summarize(failedOnce, a, NOW).split('\n')[1]).toBe(
        `  control plane https://cp.fleet.test:8443 is reachable, last heartbeat 7 s ago; the last attempt FAILED: HTTP 503: {"error":"maintenance"} (1 failure(s) in a row, failing since ${secondsBefore(2)} (2 s ago))`,
      );
    });

    it('says it from the heartbeat block too, without /readyz', () => {
      const a = assess(failedOnce, { kind: 'absent' }, NOW);
      expect(a.reachability).toMatchObject({ kind: 'reachable', lastAttemptFailed: { consecutiveFailures: 1 } });
    });
  });

  it('does not throw on a document of the wrong shape', () => {
    const odd = { heartbeat: 'x', outbound: [], certificate: 5, rollouts: {}, activation: { lastResult: 'failed' } };

    const a = assess(odd, { kind: 'absent' }, NOW);

    expect(a.exit).toBe(STATUS_EXIT.healthy);
    expect(a.reachability.kind).toBe('unknown');
    expect(() => summarize(odd, a, NOW)).not.toThrow();
  });
});

describe('summarize', () => {
  it('says who, the verdict, reachability, closure, rollouts, backlog, replay and certificate', () => {
    const status = statusDoc();
    const text = summarize(status, assess(status, READY, NOW), NOW);

    expect(text.split('\n')).toEqual([
      'web-01 (nixfleet-agent 0.1.0, pid 4242, up 10 min): HEALTHY',
      '  control plane https://cp.fleet.test:8443 is reachable, last heartbeat 12 s ago',
      `  closure       ${CLOSURE}`,
      '  rollouts      stable@a1b2c3d4  Converged (last seq 5, delivered through 5)',
      '  outbound      0 pending, 5 delivered, 0 refused',
      '  replay        none asked for',
      `  certificate   CN web-01, expires in 300 days (${secondsBefore(-300 * DAY)})`,
    ]);
  });

  it('spells out an unreachable control plane: for how long, the last error, the failures in a row', () => {
    const status = statusDoc();
    const text = summarize(status, assess(status, unreachable(), NOW), NOW);

    expect(text).toMatch(/^web-01 .*: DEGRADED: control plane unreachable$/m);
    expect(text).toContain(
      'control plane https://cp.fleet.test:8443 is UNREACHABLE for 4 min: HTTP 503: {"error":"maintenance"} (4 failure(s) in a row)',
    );
  });

  it('says when no heartbeat was ever answered', () => {
    const status = statusDoc();
    const text = summarize(status, assess(status, unreachable({ lastError: null, consecutiveFailures: 0, failingForSecs: 3 }), NOW), NOW);

    expect(text).toMatch(/control plane https:\/\/cp\.fleet\.test:8443 is UNREACHABLE for 3 s: no heartbeat answered yet$/m);
  });

  it('shows the backlog, a paused delivery, a running replay, every rollout and an expiring certificate', () => {
    const status = withBlock('outbound', {
      pending: 4,
      oldestPendingAgeSecs: 185,
      deliveryPausedReason: 'HTTP 403: forbidden',
      replay: { running: true, rolloutId: 'canary@0f0f0f0f', fromSeq: 2, resent: 1, missing: [1] },
    });
    status.rollouts = [
      ...(status.rollouts as Json[]),
      { rolloutId: 'canary@0f0f0f0f', channel: 'canary', state: 'Soaking', targetClosure: null, lastEventSeq: 3, lastDeliveredSeq: null },
    ];
    status.certificate = { ...(status.certificate as Json), secondsToExpiry: 3 * DAY + 100 };
    const text = summarize(status, assess(status, READY, NOW), NOW);

    expect(text).toMatch(/: DEGRADED: event delivery paused; client certificate expires in 3 days$/m);
    expect(text).toContain(
      '  rollouts      stable@a1b2c3d4  Converged (last seq 5, delivered through 5)\n                canary@0f0f0f0f  Soaking (last seq 3, delivered through -)',
    );
    expect(text).toContain('  outbound      4 pending (oldest 3 min), 5 delivered, 0 refused; delivery PAUSED: HTTP 403: forbidden');
    expect(text).toContain('  replay        running, canary@0f0f0f0f from seq 2: 1 resent, missing 1');
    expect(text).toContain('warning: a replay of canary@0f0f0f0f could not resend seqs 1: retention had dropped them');
  });

  describe('health: the probes section', () => {
    const OLD = `${'b'.repeat(32)}-nixos-system-web-01-26.04`;
    const probe = (over: Json): Json => ({
      name: 'db-ping',
      kind: 'tcp',
      mode: 'enforce',
      lastResult: null,
      since: null,
      failingForSecs: null,
      failureReason: null,
      ...over,
    });
    const judged = (over: Json): Json => ({
      rolloutId: 'stable@a1b2c3d4',
      state: 'Soaking',
      soakDueAt: secondsBefore(-240),
      soakRemainingSecs: 240,
      probesDeclared: true,
      probes: [],
      waitingFor: [],
      failedAt: null,
      policyApplied: null,
      rollback: null,
      ...over,
    });
    const withProbes = (rollouts: Json[], file: Json = {}): Json =>
      statusDoc({
        probes: {
          healthChecksFile: {
            path: '/etc/nixfleet/agent/health-checks.json',
            state: 'loaded',
            readAt: secondsBefore(60),
            problems: [],
            ...file,
          },
          activeRollout: 'stable@a1b2c3d4',
          runners: [],
          rollouts,
        },
      });

    it('says why a soaking rollout has not converged yet, then one line per probe with its result, since when and why it fails', () => {
      const status = withProbes([
        judged({
          waitingFor: [
            'waiting for probe db-ping (no result yet)',
            'probe web failing for 40 s (the rollout fails if it still fails in 80 s)',
            'soak ends in 4 min',
          ],
          probes: [
            probe({}),
            probe({ name: 'cache', kind: 'http', mode: 'observe', lastResult: 'pass', since: secondsBefore(30) }),
            probe({
              name: 'web',
              kind: 'http',
              lastResult: 'fail',
              since: secondsBefore(40),
              failingForSecs: 40,
              failureReason: 'GET http://127.0.0.1:8080/health answered 503, expected 200',
            }),
            probe({ name: 'legacy', mode: 'disabled' }),
          ],
        }),
      ]);
      const text = summarize(status, assess(status, READY, NOW), NOW);

      expect(text).toContain(
        [
          '  health checks /etc/nixfleet/agent/health-checks.json: read',
          '  health        stable@a1b2c3d4 Soaking: waiting for probe db-ping (no result yet); probe web failing for 40 s (the rollout fails if it still fails in 80 s); soak ends in 4 min',
          '                  probe db-ping (tcp, enforce): no result yet',
          `                  probe cache (http, observe): pass since ${secondsBefore(30)} (30 s ago)`,
          `                  probe web (http, enforce): FAIL since ${secondsBefore(40)} (40 s ago): GET http://127.0.0.1:8080/health answered 503, expected 200`,
          '                  probe legacy (tcp, disabled): not run',
        ].join('\n'),
      );
      // A rollout that is still soaking is not a problem of the agent.
      expect(text).toMatch(/: HEALTHY$/m);
    });

    it('gives a failed rollout its policy and the rollback: done, or failed and needing an operator', () => {
      const reverted = withProbes([
        judged({
          state: 'Reverted',
          failedAt: secondsBefore(120),
          policyApplied: 'rollback-and-halt',
          rollback: { toClosure: OLD, exitCode: 0, completedAt: secondsBefore(100) },
        }),
      ]);
      expect(summarize(reverted, assess(reverted, READY, NOW), NOW)).toContain(
        `  health        stable@a1b2c3d4 Reverted (failed ${secondsBefore(120)} (2 min ago)); policy rollback-and-halt; rolled back to ${OLD}`,
      );
      const stuck = withProbes([
        judged({
          state: 'Failed',
          failedAt: secondsBefore(120),
          policyApplied: 'rollback-and-halt',
          rollback: { toClosure: OLD, exitCode: 4, completedAt: secondsBefore(100) },
        }),
      ]);
      expect(summarize(stuck, assess(stuck, READY, NOW), NOW)).toContain(
        `policy rollback-and-halt; ROLLBACK to ${OLD} FAILED (exit code 4): the host needs an operator`,
      );
      // Said as warnings too, without degrading the agent: it works; the host is not where the fleet wanted it.
      expect(assess(reverted, READY, NOW)).toMatchObject({ exit: STATUS_EXIT.healthy });
      expect(summarize(reverted, assess(reverted, READY, NOW), NOW)).toContain(
        `warning: rollout stable@a1b2c3d4 failed and was rolled back to ${OLD}`,
      );
      expect(summarize(stuck, assess(stuck, READY, NOW), NOW)).toContain(
        `warning: rollout stable@a1b2c3d4 failed and its rollback to ${OLD} FAILED (exit code 4): the host needs an operator`,
      );
      const halted = withProbes([judged({ state: 'Failed', failedAt: secondsBefore(60), policyApplied: 'halt' })]);
      expect(summarize(halted, assess(halted, READY, NOW), NOW)).toContain(
        'warning: rollout stable@a1b2c3d4 failed and was halted: the host still runs its closure',
      );
    });

    it('says when the file is missing, or names its problems', () => {
      const missing = withProbes([], { state: 'missing', problems: [] });
      expect(summarize(missing, assess(missing, READY, NOW), NOW)).toContain(
        '  health checks /etc/nixfleet/agent/health-checks.json: missing (no probes; rollouts are judged by soak time alone)',
      );
      const invalid = withProbes([], { state: 'invalid', problems: ['probe "db", field "port": must be a whole number'] });
      expect(summarize(invalid, assess(invalid, READY, NOW), NOW)).toContain(
        'INVALID, the refused probes count as failing: probe "db", field "port": must be a whole number',
      );
    });
  });

  it('marks an expired certificate and says "not known" for what the agent does not report', () => {
    const expired = withBlock('certificate', { secondsToExpiry: -2 * 3600 });
    expect(summarize(expired, assess(expired, READY, NOW), NOW)).toMatch(/certificate {3}CN web-01, EXPIRED 2 h ago \(/);

    const bare = statusDoc({ certificate: undefined, currentClosure: null, rollouts: [] });
    const text = summarize(bare, assess(bare, READY, NOW), NOW);
    expect(text).toContain('  certificate   not known');
    expect(text).toContain('  rollouts      none');
    expect(text).toContain('  closure       not known (the current-system link is unreadable)');
  });

  it('says which way the host clock is off: clockSkewSecs is how far the CP is ahead', () => {
    const cpBehind = withBlock('heartbeat', { clockSkewSecs: -45 });
    expect(summarize(cpBehind, assess(cpBehind, READY, NOW), NOW)).toContain(
      "warning: this host's clock is 45 s ahead of the control plane's",
    );
    const cpAhead = withBlock('heartbeat', { clockSkewSecs: 90 });
    expect(summarize(cpAhead, assess(cpAhead, READY, NOW), NOW)).toContain("warning: this host's clock is 90 s behind the control plane's");
  });

  it('ends with one line per warning', () => {
    const status = withBlock('outbound', { refused: 1 });
    const text = summarize(status, assess(status, READY, NOW), NOW);

    expect(text.split('\n').at(-1)).toBe('warning: the control plane refused 1 event(s); they are kept on record and not retried');
  });
});

describe('the trust section', () => {
  const TRUST_FILE = '/etc/nixfleet/agent/trust.json';
  const UNVERIFIED = `UNVERIFIED: no trust file at ${TRUST_FILE} and --allow-unsigned is set, so dispatches are acted on without checking the fleet CI's signature`;
  const verified = (over: Json = {}): Json => ({
    rolloutId: 'stable@a1b2c3d4',
    targetClosure: CLOSURE,
    keySlot: 'current',
    signedAt: secondsBefore(130),
    verifiedAt: secondsBefore(120),
    from: 'control-plane',
    ...over,
  });
  const failure = (over: Json = {}): Json => ({
    rolloutId: 'beta@0badc0de',
    targetClosure: CLOSURE,
    reason: 'bad-signature',
    detail: 'the signature verifies with none of the current key (ed25519)\nsecond line',
    at: secondsBefore(30),
    during: 'dispatch',
    ...over,
  });
  const withTrust = (over: Json = {}): Json =>
    statusDoc({
      trust: {
        mode: 'verify',
        trustFile: TRUST_FILE,
        warning: null,
        keys: { current: 'ed25519', previous: 'ecdsa-p256', rejectBefore: null },
        lastVerified: null,
        lastFailure: null,
        refusedTotal: 0,
        unverifiedTotal: 0,
        ...over,
      },
    });
  const summary = (status: Json): string[] => summarize(status, assess(status, READY, NOW), NOW).split('\n');

  it('prints a trust row before outbound: the file and its keys, the last dispatch verified and with which key, the refusals', () => {
    const currentOnly = withTrust({ keys: { current: 'ed25519', previous: null, rejectBefore: null } });
    expect(summary(currentOnly)).toContain(`  trust         verifying with ${TRUST_FILE} (current ed25519); no dispatch verified yet`);
    const lines = summary(withTrust({ lastVerified: verified() }));
    const row = `  trust         verifying with ${TRUST_FILE} (current ed25519, previous ecdsa-p256); last verified stable@a1b2c3d4 at ${secondsBefore(120)} (2 min ago)`;
    expect(lines.indexOf(row)).toBe(lines.findIndex((l) => l.startsWith('  outbound')) - 1);

    const previous = withTrust({
      lastVerified: verified({ keySlot: 'previous', verifiedAt: secondsBefore(5) }),
      lastFailure: failure(),
      refusedTotal: 2,
    });
    expect(summary(previous)).toContain(
      `  trust         verifying with ${TRUST_FILE} (current ed25519, previous ecdsa-p256); last verified stable@a1b2c3d4 (with the previous key) at ${secondsBefore(5)} (5 s ago); 2 refused since start`,
    );
  });

  it('warns in every status while dispatches run unverified (--allow-unsigned), without degrading', () => {
    const status = withTrust({ mode: 'unsigned', warning: UNVERIFIED, keys: null, unverifiedTotal: 3 });
    const a = assess(status, READY, NOW);

    expect(a.exit).toBe(STATUS_EXIT.healthy);
    expect(a.warnings).toEqual([{ kind: 'dispatches-unverified', warning: UNVERIFIED }]);
    const lines = summary(status);
    expect(lines).toContain(`  trust         UNVERIFIED: no trust file at ${TRUST_FILE} (--allow-unsigned)`);
    expect(lines.at(-1)).toBe(`warning: ${UNVERIFIED}`);
  });

  it('warns about the last refused dispatch, naming its check, until a dispatch verifies after it', () => {
    const refused = withTrust({ lastVerified: verified(), lastFailure: failure(), refusedTotal: 1 });
    const a = assess(refused, READY, NOW);

    expect(a.exit).toBe(STATUS_EXIT.healthy);
    expect(a.warnings).toEqual([
      {
        kind: 'dispatch-refused',
        rolloutId: 'beta@0badc0de',
        reason: 'bad-signature',
        detail: 'the signature verifies with none of the current key (ed25519)',
        during: 'dispatch',
      },
    ]);
    expect(summary(refused).at(-1)).toBe(
      'warning: the last dispatch, beta@0badc0de, was REFUSED (bad-signature): the signature verifies with none of the current key (ed25519); not acknowledged, nothing switched',
    );

    const verifiedSince = withTrust({ lastVerified: verified({ verifiedAt: secondsBefore(10) }), lastFailure: failure(), refusedTotal: 1 });
    expect(assess(verifiedSince, READY, NOW).warnings).toEqual([]);
  });

  it('says a refused resume is an activation not run again after a restart', () => {
    const status = withTrust({
      lastFailure: failure({
        rolloutId: 'stable@a1b2c3d4',
        reason: 'cache-tampered',
        detail: 'rollouts/stable@a1b2c3d4.json: bad-signature',
        during: 'resume',
      }),
      refusedTotal: 1,
    });

    expect(summary(status).at(-1)).toBe(
      'warning: the resumed activation of stable@a1b2c3d4 was REFUSED (cache-tampered): rollouts/stable@a1b2c3d4.json: bad-signature',
    );
  });
});

describe('readyzOf', () => {
  it('reads 200 as ready, 503 as unreachable with its fields, 404 as absent, anything else as unknown', () => {
    expect(readyzOf({ status: 200, body: { status: 'ok', lastSuccessAt: '2026-11-28T11:59:00.000Z' } })).toEqual({
      kind: 'ready',
      lastSuccessAt: '2026-11-28T11:59:00.000Z',
    });
    expect(
      readyzOf({
        status: 503,
        body: {
          status: 'unreachable',
          lastError: 'HTTP 503: down',
          failingForSecs: 31,
          lastSuccessAt: null,
          consecutiveFailures: 3,
          thresholdSecs: 3,
        },
      }),
    ).toEqual({ kind: 'unreachable', lastError: 'HTTP 503: down', failingForSecs: 31, lastSuccessAt: null, consecutiveFailures: 3 });
    expect(readyzOf({ status: 503, body: 'busy' })).toEqual({
      kind: 'unreachable',
      lastError: null,
      failingForSecs: null,
      lastSuccessAt: null,
      consecutiveFailures: null,
    });
    expect(readyzOf({ status: 404, body: { statusCode: 404, message: 'Cannot GET /readyz' } })).toEqual({ kind: 'absent' });
    // Unready for another reason (the event log): the control plane itself is reachable.
    expect(
      readyzOf({
        status: 503,
        body: { status: 'event-log-failing', reachable: true, lastSuccessAt: '2026-11-28T11:59:00.000Z', consecutiveFailures: 0 },
      }),
    ).toEqual({ kind: 'ready', lastSuccessAt: '2026-11-28T11:59:00.000Z' });
    expect(readyzOf({ status: 500, body: {} })).toEqual({ kind: 'unknown', why: '/readyz answered HTTP 500' });
  });
});

describe('--help on the exit status of status', () => {
  it('names every reason assess has for "degraded"', () => {
    const help = helpText(false).replace(/\n/g, ' ');
    const reasons = [
      'control plane unreachable',
      'event delivery paused',
      `the client certificate expired or within ${CERT_EXPIRY_WARNING_DAYS} days of expiry`,
      ...JUDGED_BY_COMPONENT.map((name) => `${COMPONENT_LABELS[name]} failing`),
    ];
    for (const reason of reasons) expect([reason, help.includes(reason)]).toEqual([reason, true]);
  });
});

describe('formatSeqs', () => {
  it('folds runs of seqs and caps the list', () => {
    expect(formatSeqs([9, 3, 4, 5, 4])).toBe('3-5, 9');
    expect(formatSeqs(Array.from({ length: 20 }, (_, i) => i * 2))).toBe('0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, ...');
  });
});

describe('runStatusCommand against a real HTTP server on loopback', () => {
  let server: http.Server;
  let port: number;
  let routes: Record<string, { status: number; body: string }>;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      const route = routes[req.url ?? ''] ?? { status: 404, body: JSON.stringify({ statusCode: 404, message: 'Not Found' }) };
      res.writeHead(route.status, { 'content-type': 'application/json' }).end(route.body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  });

  async function run(json = false, address: Parameters<typeof runStatusCommand>[0] = { kind: 'tcp', host: '127.0.0.1', port }) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runStatusCommand(address, json, { out: (t) => out.push(t), err: (t) => err.push(t) }, () => NOW);
    return { code, out: out.join('\n'), err: err.join('\n') };
  }

  it('prints the summary and exits 0 for a healthy agent', async () => {
    routes = {
      '/status': { status: 200, body: JSON.stringify(statusDoc()) },
      '/readyz': { status: 200, body: JSON.stringify({ status: 'ok', lastSuccessAt: secondsBefore(12) }) },
    };

    const r = await run();

    expect(r).toMatchObject({ code: STATUS_EXIT.healthy, err: '' });
    expect(r.out).toContain('reachable, last heartbeat 12 s ago');
  });

  it('exits 1 when /readyz answers 503, and --json prints the raw /status with the same exit status', async () => {
    routes = {
      '/status': { status: 200, body: JSON.stringify(statusDoc()) },
      '/readyz': {
        status: 503,
        body: JSON.stringify({
          status: 'unreachable',
          lastError: 'HTTP 503: down',
          failingForSecs: 40,
          lastSuccessAt: null,
          consecutiveFailures: 5,
        }),
      },
    };

    const text = await run();
    const json = await run(true);

    expect(text.code).toBe(STATUS_EXIT.degraded);
    expect(text.out).toContain('UNREACHABLE for 40 s: HTTP 503: down');
    expect(json.code).toBe(STATUS_EXIT.degraded);
    expect(JSON.parse(json.out)).toEqual(statusDoc());
  });

  it('judges from /status when the agent has no /readyz', async () => {
    routes = { '/status': { status: 200, body: JSON.stringify(statusDoc()) } };

    const r = await run();

    expect(r.code).toBe(STATUS_EXIT.healthy);
    expect(r.out).toContain('reachable, last heartbeat 12 s ago');
  });

  it('exits 3 naming the address and --admin-listen when nothing listens', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nfa-status-'));
    try {
      const socket = join(dir, 'admin.sock');
      const r = await run(false, { kind: 'unix', path: socket });

      expect(r.code).toBe(STATUS_EXIT.unreachable);
      expect(r.out).toBe('');
      expect(r.err.split('\n')).toHaveLength(1);
      expect(r.err).toContain(`no agent answers at unix:${socket}`);
      expect(r.err).toContain('--admin-listen');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('exits 3 when something else answers at the address', async () => {
    routes = { '/status': { status: 200, body: '<html>hello</html>' } };
    const notJson = await run();
    routes = {};
    const notFound = await run();

    expect(notJson.code).toBe(STATUS_EXIT.unreachable);
    expect(notJson.err).toBe(
      `nixfleet-agent status: 127.0.0.1:${port} answered HTTP 200 to /status, not with an agent's status document; is --admin-listen the address of the agent's admin endpoint?`,
    );
    expect(notFound.code).toBe(STATUS_EXIT.unreachable);
    expect(notFound.err).toContain('answered HTTP 404 to /status');
  });
});

describe('history: transitions and heartbeat outcomes', () => {
  const BEFORE = `${'b'.repeat(32)}-nixos-system-web-01-26.04`;

  /** A soaking rollout with its history, and recent heartbeats, one of them failed. */
  function withHistory(): Json {
    const status = withBlock('heartbeat', {
      recentOutcomes: [
        { at: secondsBefore(300), source: 'boot-recovery', result: 'ok', httpStatus: 200, latencyMs: 41, error: null },
        {
          at: secondsBefore(72),
          source: 'heartbeat',
          result: 'http-status',
          httpStatus: 503,
          latencyMs: 9,
          error: 'HTTP 503: {"error":"x"}',
        },
        {
          at: secondsBefore(60),
          source: 'heartbeat',
          result: 'connect',
          httpStatus: null,
          latencyMs: 3,
          error: 'cannot connect: ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:8443',
        },
        { at: secondsBefore(12), source: 'heartbeat', result: 'ok', httpStatus: 200, latencyMs: 7, error: null },
      ],
    });
    status.rollouts = [
      {
        rolloutId: 'stable@a1b2c3d4',
        channel: 'stable',
        state: 'Soaking',
        targetClosure: CLOSURE,
        lastEventSeq: 3,
        lastDeliveredSeq: 3,
        since: secondsBefore(90),
        soakDueAt: secondsBefore(-210),
        closureBefore: BEFORE,
        closureAfter: CLOSURE,
        transitions: [
          { from: null, to: 'Activating', at: secondsBefore(100), input: 'Activate' },
          { from: 'Activating', to: 'Soaking', at: secondsBefore(90), input: 'ActivationCompleted' },
        ],
      },
    ];
    return status;
  }

  it('prints each heartbeat after the control plane row, and each rollout with since when, the soak end, the closures and its transitions', () => {
    const status = withHistory();
    const text = summarize(status, assess(status, READY, NOW), NOW);

    expect(text.split('\n')).toEqual([
      'web-01 (nixfleet-agent 0.1.0, pid 4242, up 10 min): HEALTHY',
      '  control plane https://cp.fleet.test:8443 is reachable, last heartbeat 12 s ago',
      `  heartbeats    ${secondsBefore(300)} (5 min ago)  ok (HTTP 200) in 41 ms (boot recovery)`,
      `                ${secondsBefore(72)} (72 s ago)  FAILED: HTTP 503 in 9 ms`,
      `                ${secondsBefore(60)} (60 s ago)  FAILED: connect (cannot connect: ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:8443) in 3 ms`,
      `                ${secondsBefore(12)} (12 s ago)  ok (HTTP 200) in 7 ms`,
      `  closure       ${CLOSURE}`,
      `  rollouts      stable@a1b2c3d4  Soaking since ${secondsBefore(90)} (90 s ago) (last seq 3, delivered through 3)`,
      `                  soak ends ${secondsBefore(-210)} (in 3 min)`,
      `                  closure ${BEFORE} -> ${CLOSURE}`,
      `                  ${secondsBefore(100)} (100 s ago)  new -> Activating (Activate)`,
      `                  ${secondsBefore(90)} (90 s ago)  Activating -> Soaking (ActivationCompleted)`,
      '  outbound      0 pending, 5 delivered, 0 refused',
      '  replay        none asked for',
      `  certificate   CN web-01, expires in 300 days (${secondsBefore(-300 * DAY)})`,
    ]);
  });

  it('says a soak end that has passed as how long ago, and a closure not switched to yet', () => {
    const status = withHistory();
    const [rollout] = status.rollouts as Json[];
    Object.assign(rollout, { soakDueAt: secondsBefore(5), closureAfter: null, transitions: [] });
    const text = summarize(status, assess(status, READY, NOW), NOW);

    expect(text).toContain(`\n                  soak ends ${secondsBefore(5)} (5 s ago)\n`);
    expect(text).toContain(`\n                  closure ${BEFORE} -> not switched yet\n`);
  });
});

describe('status --watch', () => {
  describe('watchFrame', () => {
    it('redraws in place on a terminal: cursor home, each line erased to its end, everything below erased', () => {
      const frame = watchFrame('first line\nsecond', true, false);

      expect(frame).toBe('\x1b[Hfirst line\x1b[K\nsecond\x1b[K\n\x1b[J');
      expect(TTY_HOME).toBe('\x1b[H');
      expect(TTY_ERASE_LINE).toBe('\x1b[K');
      expect(TTY_ERASE_BELOW).toBe('\x1b[J');
      // The first frame overwrites the screen the same way.
      expect(watchFrame('x', true, true)).toBe('\x1b[Hx\x1b[K\n\x1b[J');
    });

    it('elsewhere writes plain blocks, a blank line before each but the first, and no escape code', () => {
      const written = [watchFrame('a\nb', false, true), watchFrame('c', false, false)].join('');

      expect(written).toBe('a\nb\n\nc\n');
      expect(written).not.toContain('\x1b');
    });

    /** The lines a terminal frame shows, without its escape codes. */
    function shown(frame: string): string[] {
      expect(frame.startsWith(TTY_HOME)).toBe(true);
      expect(frame.endsWith(`\n${TTY_ERASE_BELOW}`)).toBe(true);
      return frame
        .slice(TTY_HOME.length, -`\n${TTY_ERASE_BELOW}`.length)
        .split('\n')
        .map((line) => {
          expect(line.endsWith(TTY_ERASE_LINE)).toBe(true);
          return line.slice(0, -TTY_ERASE_LINE.length);
        });
    }

    const thirty = Array.from({ length: 30 }, (_, i) => `line ${i + 1}`).join('\n');

    it('on a terminal shorter than the frame keeps its top and says on the last row how many lines were cut, never reaching the bottom row', () => {
      const lines = shown(watchFrame(thirty, true, false, { rows: 24, columns: 80 }));

      // 23 rows written, each ended by a newline: the cursor waits on row 24 and nothing scrolls.
      expect(lines).toHaveLength(23);
      expect(lines.slice(0, 22)).toEqual(Array.from({ length: 22 }, (_, i) => `line ${i + 1}`));
      expect(lines[22]).toBe('… 8 more lines: enlarge the terminal or use status without --watch');
      // A frame that fits is not cut, to the row.
      expect(shown(watchFrame(thirty, true, false, { rows: 31 }))).toEqual(thirty.split('\n'));
      expect(fitToTerminal(['a', 'b', 'c'], { rows: 3 })).toEqual([
        'a',
        '… 2 more lines: enlarge the terminal or use status without --watch',
      ]);
      expect(fitToTerminal(['a', 'b', 'c'], { rows: 2 })).toEqual(['… 3 more lines: enlarge the terminal or use status without --watch']);
      expect(fitToTerminal(['a', 'b', 'c', 'd'], { rows: 4 })).toEqual([
        'a',
        'b',
        '… 2 more lines: enlarge the terminal or use status without --watch',
      ]);
      expect(fitToTerminal(['a', 'b', 'c', 'd'], { rows: 5 })).toEqual(['a', 'b', 'c', 'd']);
    });

    it('cuts a line wider than the terminal short of its last column, ending it in "…", so that nothing wraps', () => {
      const lines = shown(watchFrame(`${'x'.repeat(19)}\n${'y'.repeat(20)}\n${'z'.repeat(100)}\nshort`, true, false, { columns: 20 }));

      expect(lines).toEqual(['x'.repeat(19), `${'y'.repeat(18)}…`, `${'z'.repeat(18)}…`, 'short']);
      // Counted in characters, not UTF-16 units: a character outside the BMP is not split.
      expect(fitToTerminal(['🙂'.repeat(10)], { columns: 6 })).toEqual([`${'🙂'.repeat(4)}…`]);
      // Both at once: the note about the cut lines is cut to the width too.
      expect(fitToTerminal(['a'.repeat(50), 'b', 'c', 'd'], { rows: 4, columns: 21 })).toEqual([
        `${'a'.repeat(19)}…`,
        'b',
        '… 2 more lines: enl…',
      ]);
    });

    it('keeps the whole frame when the size is not known, and never cuts a block that is not for a terminal', () => {
      const long = `${thirty}\n${'w'.repeat(300)}`;
      const whole = watchFrame(long, true, false);

      for (const size of [{}, { rows: undefined, columns: undefined }, { rows: 0, columns: 0 }, { rows: Number.NaN, columns: 2.5 }]) {
        expect(watchFrame(long, true, false, size as TerminalSize)).toBe(whole);
      }
      expect(shown(whole)).toEqual(long.split('\n'));
      // Only the width known: every line kept, each cut to it; only the height known: lines kept whole.
      expect(shown(watchFrame(long, true, false, { columns: 80 }))).toHaveLength(31);
      expect(shown(watchFrame(long, true, false, { rows: 10 }))[0]).toBe('line 1');
      expect(shown(watchFrame(long, true, false, { rows: 40 }))[30]).toBe('w'.repeat(300));
      expect(watchFrame(long, false, true, { rows: 5, columns: 10 })).toBe(`${long}\n`);
    });
  });

  describe('watchStatus against a real HTTP server on loopback', () => {
    let server: http.Server;
    let port: number;
    let requests = 0;
    let answering = true;

    beforeAll(async () => {
      server = http.createServer((req, res) => {
        requests += 1;
        if (!answering) {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('nothing here');
          return;
        }
        const body = req.url === '/status' ? statusDoc() : { status: 'ok', lastSuccessAt: secondsBefore(12) };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as AddressInfo).port;
    });
    afterAll(async () => {
      await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    });
    beforeEach(() => {
      answering = true;
    });

    /** Runs the watch until `frames` writes (or error lines) came, then stops it as a signal would. */
    async function watch(json: boolean, tty: boolean, frames: number, size?: () => TerminalSize) {
      const written: string[] = [];
      const errors: string[] = [];
      const stop = new AbortController();
      const seen = (): void => {
        if (written.length + errors.length >= frames) stop.abort();
      };
      const io = {
        write: (t: string): void => {
          written.push(t);
          seen();
        },
        err: (t: string): void => {
          errors.push(t);
          seen();
        },
        tty,
        size,
      };
      const code = await watchStatus({ kind: 'tcp', host: '127.0.0.1', port }, json, 0.1, io, stop.signal, () => NOW);
      return { code, written, errors };
    }

    it('prints a plain block per refresh, separated by a blank line, and returns 0 when stopped', async () => {
      const r = await watch(false, false, 2);

      expect(r.code).toBe(0);
      expect(r.errors).toEqual([]);
      expect(r.written).toHaveLength(2);
      const blocks = r.written.join('').split('\n\n');
      expect(blocks).toHaveLength(2);
      for (const block of blocks) {
        expect(block.split('\n')[0]).toBe(`every 0.1 s: nixfleet-agent status at ${NOW.toISOString()}`);
        expect(block).toContain('web-01 (nixfleet-agent 0.1.0, pid 4242, up 10 min): HEALTHY');
      }
      expect(r.written.join('')).not.toContain('\x1b');
    });

    it('redraws in place on a terminal and says how to stop', async () => {
      const r = await watch(false, true, 2);

      expect(r.code).toBe(0);
      for (const frame of r.written) {
        expect(frame.startsWith(`\x1b[Hevery 0.1 s: nixfleet-agent status at ${NOW.toISOString()} (Ctrl-C to stop)\x1b[K\n`)).toBe(true);
        expect(frame.endsWith('\n\x1b[J')).toBe(true);
      }
    });

    it('fits each frame to the terminal as it is at that refresh: the verdict stays in sight, and a resize shows at the next frame', async () => {
      // A small terminal, then enlarged (SIGWINCH) to hold the whole frame.
      const sizes: TerminalSize[] = [
        { rows: 6, columns: 64 },
        { rows: 40, columns: 72 },
      ];
      let asked = 0;
      const r = await watch(false, true, 2, () => sizes[Math.min(asked++, sizes.length - 1)]);

      expect(r.code).toBe(0);
      expect(r.written).toHaveLength(2);
      const [small, large] = r.written.map((frame) =>
        frame
          .slice(TTY_HOME.length, -`\n${TTY_ERASE_BELOW}`.length)
          .split(`${TTY_ERASE_LINE}\n`)
          .map((line) => line.replace(TTY_ERASE_LINE, '')),
      );
      const header = `every 0.1 s: nixfleet-agent status at ${NOW.toISOString()} (Ctrl-C to stop)`;
      const whole = [
        header,
        ...summarize(statusDoc(), assess(statusDoc(), { kind: 'ready', lastSuccessAt: secondsBefore(12) }, NOW), NOW).split('\n'),
      ];
      expect(whole.length).toBeGreaterThan(5);

      expect(small).toHaveLength(5);
      expect(small[0]).toBe(`${header.slice(0, 62)}…`);
      expect(small[1]).toBe('web-01 (nixfleet-agent 0.1.0, pid 4242, up 10 min): HEALTHY');
      expect(small.slice(2, 4)).toEqual(whole.slice(2, 4).map((line) => (line.length > 63 ? `${line.slice(0, 62)}…` : line)));
      expect(small[4]).toBe(`… ${whole.length - 4} more lines: enlarge the terminal or use status without --w…`);

      expect(large).toEqual(whole.map((line) => (line.length > 71 ? `${line.slice(0, 70)}…` : line)));
      expect(large[0]).toBe(`${header.slice(0, 70)}…`);
    });

    it('with --json writes one compact /status document per line, without escape codes even on a terminal', async () => {
      const r = await watch(true, true, 3);

      expect(r.code).toBe(0);
      expect(r.written).toHaveLength(3);
      for (const line of r.written) {
        expect(line.endsWith('\n')).toBe(true);
        expect(line.slice(0, -1)).not.toContain('\n');
        expect(JSON.parse(line)).toEqual(statusDoc());
      }
      expect(r.written.join('')).not.toContain('\x1b');
    });

    it('goes on when the agent does not answer: the refresh says so in text, or on stderr with --json', async () => {
      answering = false;
      const text = await watch(false, false, 2);
      const json = await watch(true, false, 2);

      expect(text.code).toBe(0);
      expect(text.written).toHaveLength(2);
      expect(text.written[1]).toContain(`127.0.0.1:${port} answered HTTP 404 to /status, not with an agent's status document`);
      expect(json.written).toEqual([]);
      expect(json.errors).toHaveLength(2);
      expect(json.errors[0]).toContain('answered HTTP 404 to /status');
    });

    it('stops at once when stopped while waiting for the next refresh', async () => {
      const stop = new AbortController();
      const written: string[] = [];
      const before = requests;
      const started = Date.now();
      const io = {
        write: (t: string): void => {
          written.push(t);
          // Stopped well inside the hour-long wait for the next refresh.
          setTimeout(() => stop.abort(), 20);
        },
        err: (): void => undefined,
        tty: false,
      };

      const code = await watchStatus({ kind: 'tcp', host: '127.0.0.1', port }, false, 3600, io, stop.signal, () => NOW);

      expect(code).toBe(0);
      expect(written).toHaveLength(1);
      expect(requests - before).toBe(2);
      expect(Date.now() - started).toBeLessThan(2_000);
    });
  });
});
