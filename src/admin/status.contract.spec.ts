import { STATUS_KEYS } from './status-keys';
import { statusContractProblems } from './status.contract';

const AT = '2026-11-28T12:00:00.000Z';
const CLOSURE = `${'a'.repeat(32)}-nixos-system-web-01-26.05`;
const PREVIOUS = `${'b'.repeat(32)}-nixos-system-web-01-26.04`;

type Json = Record<string, unknown>;

/** A document as an agent in the middle of things writes it: every section, most values set. */
function document(): Json {
  const component = (): Json => ({ state: 'ok', detail: 'fine', since: null });
  return {
    machineId: 'web-01',
    agentVersion: '0.1.0',
    controlPlaneUrl: 'https://cp.test:8443',
    pid: 4242,
    startedAt: AT,
    uptimeSecs: 12,
    currentClosure: CLOSURE,
    components: {
      eventLog: component(),
      delivery: component(),
      dispatchPoll: { state: 'warning', detail: 'a poll failed', since: AT },
      activationBackend: component(),
      identity: component(),
      heartbeat: component(),
    },
    heartbeat: {
      intervalSecs: 60,
      lastAttemptAt: AT,
      lastSuccessAt: null,
      lastError: { kind: 'http-status', message: 'HTTP 503: starting', at: AT },
      consecutiveFailures: 1,
      failingSince: AT,
      nextDueAt: AT,
      lastReplayFrom: { value: '3', receivedAt: AT, source: 'heartbeat' },
      clockSkewSecs: -0.4,
      inFlight: false,
      skippedTicks: 0,
      recentOutcomes: [
        { at: AT, source: 'boot-recovery', result: 'ok', httpStatus: 200, latencyMs: 12, error: null },
        { at: AT, source: 'heartbeat', result: 'http-status', httpStatus: 503, latencyMs: 8, error: 'HTTP 503: starting' },
        { at: AT, source: 'heartbeat', result: 'connect', httpStatus: null, latencyMs: 3, error: 'cannot connect: ECONNREFUSED' },
      ],
    },
    recovery: { completedAt: AT, reachedControlPlane: true, snapshotsApplied: 1 },
    rollouts: [
      {
        rolloutId: 'stable@a1b2c3d4',
        channel: 'stable',
        state: 'Soaking',
        targetClosure: CLOSURE,
        lastEventSeq: 3,
        lastDeliveredSeq: 2,
        since: AT,
        soakDueAt: AT,
        closureBefore: PREVIOUS,
        closureAfter: CLOSURE,
        transitions: [
          { from: null, to: 'Activating', at: AT, input: 'Activate' },
          { from: 'Activating', to: 'Soaking', at: AT, input: 'ActivationCompleted' },
        ],
      },
      {
        rolloutId: 'beta@0badc0de',
        channel: 'beta',
        state: 'Deferred',
        targetClosure: null,
        lastEventSeq: 2,
        lastDeliveredSeq: null,
        since: null,
        soakDueAt: null,
        closureBefore: null,
        closureAfter: null,
        transitions: [],
      },
    ],
    outbound: {
      pending: 1,
      delivered: 4,
      refused: 0,
      oldestPendingAgeSecs: 3,
      lastDeliveredAt: AT,
      deliveryPausedReason: null,
      replay: { running: false, rolloutId: 'stable@a1b2c3d4', fromSeq: 0, resent: 3, missing: [] },
      logBytes: 2048,
    },
    eventLog: {
      path: '/var/lib/nixfleet-agent/events.log',
      failingSince: null,
      failuresInStreak: 0,
      failuresTotal: 1,
      lastError: { message: 'event log: cannot append', cause: 'ENOSPC: no space left on device, write', code: 'ENOSPC', at: AT },
      refusingWrites: null,
      clearedBy: null,
    },
    dispatch: {
      polling: true,
      lastPollAt: AT,
      lastOutcome: 'failed',
      consecutiveFailures: 1,
      failingSince: AT,
      lastError: 'HTTP 500: internal',
      lastErrorAt: AT,
      nextPollAt: AT,
      lastOrder: { rolloutId: 'stable@a1b2c3d4', targetClosure: CLOSURE, receivedAt: AT, outcome: 'accepted', detail: null },
      heldOrder: null,
    },
    activation: {
      backend: 'nixos',
      running: {
        rolloutId: 'stable@e5f6a7b8',
        closure: CLOSURE,
        kind: 'switch',
        startedAt: AT,
        phase: 'realising',
        realise: {
          lastLine: `copying path '/nix/store/${CLOSURE}' from 'https://cache.example.org'...`,
          pathsToFetch: 12,
          pathsCopied: 3,
          downloadBytes: 47_890_000,
        },
      },
      queued: 0,
      lastResult: {
        rolloutId: 'stable@a1b2c3d4',
        kind: 'switch',
        outcome: 'completed',
        exitCode: 0,
        at: AT,
        detail: `now running ${CLOSURE}`,
      },
      preflight: { checkedAt: AT, problems: [] },
    },
    probes: {
      healthChecksFile: { path: '/etc/nixfleet/agent/health-checks.json', state: 'loaded', readAt: AT, problems: [] },
      activeRollout: 'stable@a1b2c3d4',
      runners: [
        {
          name: 'db-ping',
          kind: 'tcp',
          mode: 'enforce',
          intervalSecs: 5,
          runOnce: false,
          problem: null,
          running: false,
          runs: 3,
          lastRunAt: AT,
          lastDurationMs: 2,
          lastRunResult: 'fail',
          lastRunReason: 'connect to 127.0.0.1:5432 refused (ECONNREFUSED)',
        },
      ],
      rollouts: [
        {
          rolloutId: 'stable@a1b2c3d4',
          state: 'Soaking',
          soakDueAt: AT,
          soakRemainingSecs: 240,
          probesDeclared: true,
          probes: [
            {
              name: 'db-ping',
              kind: 'tcp',
              mode: 'enforce',
              lastResult: 'fail',
              since: AT,
              failingForSecs: 10,
              failureReason: 'connect to 127.0.0.1:5432 refused (ECONNREFUSED)',
              stale: false,
            },
          ],
          waitingFor: ['probe db-ping failing for 10 s (the rollout fails if it still fails in 110 s)', 'soak ends in 4 min'],
          failedAt: null,
          policyApplied: null,
          rollback: null,
        },
      ],
    },
    trust: {
      mode: 'verify',
      trustFile: '/etc/nixfleet/agent/trust.json',
      warning: null,
      keys: { current: 'ed25519', previous: 'ecdsa-p256', rejectBefore: AT },
      lastVerified: {
        rolloutId: 'stable@a1b2c3d4',
        targetClosure: CLOSURE,
        keySlot: 'current',
        signedAt: AT,
        verifiedAt: AT,
        from: 'control-plane',
      },
      lastFailure: {
        rolloutId: 'beta@0badc0de',
        targetClosure: CLOSURE,
        reason: 'bad-signature',
        detail: 'the signature verifies with none of the current key (ed25519)',
        at: AT,
        during: 'dispatch',
      },
      refusedTotal: 1,
      unverifiedTotal: 0,
    },
    certificate: null,
    reducer: {
      queueDepth: 0,
      waitingProducers: 0,
      applied: 5,
      rejected: 1,
      failed: 0,
      unconnectedEffects: { EmitEvent: 0, FireSwitch: 0, FireRollback: 0, ResetProbeCache: 0 },
      lastProgressMono: 12_345.6,
    },
    jobs: [
      {
        name: 'heartbeat',
        state: 'scheduled',
        lastStartAt: AT,
        lastEndAt: AT,
        lastResult: { kind: 'retry-after', cause: 'HTTP 503: maintenance', secs: 30 },
        nextDueAt: AT,
        consecutiveFailures: 1,
        failingSince: AT,
        skippedTicks: 0,
      },
      {
        name: 'outbound-write-probe',
        state: 'disabled',
        lastStartAt: null,
        lastEndAt: null,
        lastResult: null,
        nextDueAt: null,
        consecutiveFailures: 0,
        failingSince: null,
        skippedTicks: 0,
      },
    ],
  };
}

const section = (doc: Json, key: string): Json => doc[key] as Json;

describe('the /status contract', () => {
  it('takes a document with every section filled in, and one with every value not known yet as null', () => {
    expect(statusContractProblems(document())).toEqual([]);

    const early = document();
    Object.assign(section(early, 'heartbeat'), {
      lastAttemptAt: null,
      lastError: null,
      failingSince: null,
      nextDueAt: null,
      lastReplayFrom: null,
      clockSkewSecs: null,
    });
    Object.assign(section(early, 'dispatch'), {
      lastPollAt: null,
      lastOutcome: null,
      lastOrder: null,
      nextPollAt: null,
      lastError: null,
      lastErrorAt: null,
      failingSince: null,
    });
    Object.assign(section(early, 'recovery'), { completedAt: null, reachedControlPlane: null });
    Object.assign(section(section(early, 'activation'), 'running'), { phase: null, realise: null });
    early.currentClosure = null;
    early.rollouts = [];
    expect(statusContractProblems(early)).toEqual([]);
    Object.assign(section(section(early, 'activation'), 'running'), {
      phase: 'realising',
      realise: { lastLine: null, pathsToFetch: null, pathsCopied: 0, downloadBytes: null },
    });
    expect(statusContractProblems(early)).toEqual([]);
  });

  it('names the key path of a key that is missing, even one whose value would be null', () => {
    const doc = document();
    delete doc.currentClosure;
    delete section(doc, 'dispatch').nextPollAt;
    delete section(section(doc, 'outbound'), 'replay').missing;

    const problems = statusContractProblems(doc);

    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^currentClosure: .*\(got nothing\)$/),
        expect.stringMatching(/^dispatch\.nextPollAt: .*\(got nothing\)$/),
        expect.stringMatching(/^outbound\.replay\.missing: /),
      ]),
    );
    expect(problems).toHaveLength(3);
  });

  it('refuses a key the contract does not declare, at any depth: a new key is added here first', () => {
    const doc = document();
    doc.uptimeMs = 12_000;
    section(doc, 'heartbeat').lastBeatMs = 4;

    expect(statusContractProblems(doc)).toEqual([
      expect.stringMatching(/^uptimeMs: property uptimeMs should not exist/),
      expect.stringMatching(/^heartbeat\.lastBeatMs: property lastBeatMs should not exist/),
    ]);
  });

  it('holds lastError to the shape of its section: an object in heartbeat and eventLog, a string in dispatch', () => {
    const swapped = document();
    section(swapped, 'heartbeat').lastError = 'HTTP 503: starting';
    section(swapped, 'eventLog').lastError = 'ENOSPC';
    section(swapped, 'dispatch').lastError = { message: 'HTTP 500: internal', at: AT };

    expect(statusContractProblems(swapped)).toEqual([
      expect.stringMatching(/^heartbeat\.lastError: .*object/),
      expect.stringMatching(/^eventLog\.lastError: .*object/),
      expect.stringMatching(/^dispatch\.lastError: .*string/),
    ]);
  });

  it('checks values: times are RFC 3339, states and kinds are from their sets, counts are whole and not negative', () => {
    const doc = document();
    doc.startedAt = '28/11/2026 12:00';
    section(section(doc, 'components'), 'delivery').state = 'degraded';
    section(section(doc, 'heartbeat'), 'lastError').kind = 'dns';
    section(doc, 'outbound').pending = -1;
    section(section(doc, 'dispatch'), 'lastOrder').outcome = 'applied';
    section(section(doc, 'activation'), 'running').phase = 'downloading';
    section(section(section(doc, 'activation'), 'running'), 'realise').pathsCopied = 1.5;

    expect(statusContractProblems(doc)).toEqual([
      expect.stringMatching(/^startedAt: startedAt must be an RFC 3339 time/),
      expect.stringMatching(/^components\.delivery\.state: /),
      expect.stringMatching(/^heartbeat\.lastError\.kind: /),
      expect.stringMatching(/^outbound\.pending: /),
      expect.stringMatching(/^dispatch\.lastOrder\.outcome: /),
      expect.stringMatching(/^activation\.running\.phase: /),
      expect.stringMatching(/^activation\.running\.realise\.pathsCopied: /),
    ]);
  });

  it("checks each rollout's transitions and each heartbeat outcome: states, inputs and results from their sets, times RFC 3339", () => {
    const doc = document();
    const [stable] = doc.rollouts as Json[];
    const transitions = stable.transitions as Json[];
    transitions[0].from = 'Dispatched';
    transitions[1].input = 'Reboot';
    transitions[1].at = 'yesterday';
    const outcomes = section(doc, 'heartbeat').recentOutcomes as Json[];
    outcomes[1].result = 'dns';
    outcomes[2].latencyMs = -1;
    delete outcomes[2].error;

    expect(statusContractProblems(doc)).toEqual([
      expect.stringMatching(/^heartbeat\.recentOutcomes\.1\.result: /),
      expect.stringMatching(/^heartbeat\.recentOutcomes\.2\.latencyMs: /),
      expect.stringMatching(/^heartbeat\.recentOutcomes\.2\.error: .*\(got nothing\)$/),
      expect.stringMatching(/^rollouts\.0\.transitions\.0\.from: /),
      expect.stringMatching(/^rollouts\.0\.transitions\.1\.at: /),
      expect.stringMatching(/^rollouts\.0\.transitions\.1\.input: /),
    ]);
  });

  it('lists every top-level key once, in the order the document is written', () => {
    expect(STATUS_KEYS).toEqual(Object.keys(document()));
  });
});
