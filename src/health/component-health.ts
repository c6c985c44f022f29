import { formatDuration } from '../clock/duration';

/**
 * Per-component health: the part of `/status` (`components`) that says, for
 * each thing the agent must do, whether it works. Pure: the service reads the
 * inputs from the agent's services, these functions judge them.
 *
 * - `failing`: that part of the agent cannot do its job now; `status` exits 1.
 * - `warning`: it works, but something deserves a look (a failure that has not
 *   lasted long enough to count, a missing tool no rollout needed yet).
 * - `ok`: nothing to say beyond the detail.
 */
export type ComponentState = 'ok' | 'warning' | 'failing';

export const COMPONENT_NAMES = ['eventLog', 'delivery', 'dispatchPoll', 'activationBackend', 'identity', 'heartbeat'] as const;
export type ComponentName = (typeof COMPONENT_NAMES)[number];

/** What a person reads in `status` for each component. */
export const COMPONENT_LABELS: Readonly<Record<ComponentName, string>> = {
  eventLog: 'event log',
  delivery: 'delivery',
  dispatchPoll: 'dispatch poll',
  activationBackend: 'activation',
  identity: 'identity',
  heartbeat: 'heartbeat',
};

export interface ComponentHealth {
  state: ComponentState;
  /** One line: what is wrong and why, and what the agent does about it; or what is fine. */
  detail: string;
  /** When the component entered its current trouble (the first failure of the streak); null when ok or not known. */
  since: string | null;
}

export type ComponentsHealth = Record<ComponentName, ComponentHealth>;

const ok = (detail: string): ComponentHealth => ({ state: 'ok', detail, since: null });

/** The event log's writes: what EventLogService tracks. */
export interface EventLogInput {
  path: string;
  /** First failed write of the current streak; null while writes work. */
  failingSince: string | null;
  failuresInStreak: number;
  /** The errno text of the last failure (e.g. "ENOSPC: no space left on device, write"). */
  lastCause: string | null;
  /** Set when the log refuses every write until the agent restarts. */
  refusingWrites: string | null;
  /** Seconds between write probes while failing. */
  probeEverySecs: number;
  /** What clears the streak: the write probe (a file-system cause), or only an append that works. */
  clearedBy: 'probe' | 'append' | null;
  events: number;
  bytes: number;
}

export function judgeEventLog(i: EventLogInput): ComponentHealth {
  if (i.refusingWrites !== null) {
    return {
      state: 'failing',
      detail: `${i.path} refuses every write: ${i.refusingWrites}; new events cannot be made durable, so none is sent and no rollout moves; restart the agent once the disk takes writes (opening the log repairs its tail)`,
      since: i.failingSince,
    };
  }
  if (i.failingSince !== null) {
    return {
      state: 'failing',
      detail: `writes to ${i.path} fail (${i.failuresInStreak} in a row): ${i.lastCause ?? 'unknown error'}; new events cannot be made durable, so none is sent and no rollout moves; ${
        i.clearedBy === 'append'
          ? 'this clears once an append to the log works (held work is retried); a probe beside the log cannot rule this cause out'
          : `a write probe runs every ${i.probeEverySecs} s and this clears on its own once writes work`
      }`,
      since: i.failingSince,
    };
  }
  return ok(`appends work; ${i.events} event(s), ${i.bytes} bytes`);
}

/** Event delivery: the drainer's state and the backlog. */
export interface DeliveryInput {
  pending: number;
  oldestPendingAgeSecs: number | null;
  pausedReason: string | null;
  consecutiveFailures: number;
  lastError: string | null;
  failingSince: string | null;
  started: boolean;
}

export function judgeDelivery(i: DeliveryInput): ComponentHealth {
  if (i.pausedReason !== null) {
    return { state: 'failing', detail: `paused: ${i.pausedReason}`, since: i.failingSince };
  }
  if (i.consecutiveFailures > 0) {
    return {
      state: 'warning',
      detail: `${i.pending} event(s) pending; the last POST failed (${i.consecutiveFailures} in a row): ${i.lastError ?? 'unknown error'}; retried with backoff, same seq`,
      since: i.failingSince,
    };
  }
  if (i.pending === 0) return ok('nothing pending');
  const age = i.oldestPendingAgeSecs === null ? '' : ` (oldest ${formatDuration(i.oldestPendingAgeSecs)} old)`;
  return ok(`${i.pending} event(s) pending${age}, ${i.started ? 'sending' : 'sent once boot recovery is over'}`);
}

/** The dispatch long-poll. */
export interface DispatchPollInput {
  polling: boolean;
  consecutiveFailures: number;
  lastError: string | null;
  failingSince: string | null;
  /** Seconds the current streak of failures has lasted; null while polls work. */
  failingForSecs: number | null;
  lastPollAgeSecs: number | null;
  /** Past this, a streak of failures is failing, not a warning: the CP's own "unreachable" threshold. */
  thresholdSecs: number;
  /** An order taken but not applied yet, because its events cannot be made durable. */
  held: { rolloutId: string; receivedAt: string; attempts: number; lastError: string } | null;
}

export function judgeDispatchPoll(i: DispatchPollInput): ComponentHealth {
  if (i.held !== null) {
    return {
      state: 'failing',
      detail: `the dispatch for ${i.held.rolloutId} is held, not applied (${i.held.attempts} attempt(s)): ${i.held.lastError}; it is applied once the event log takes writes; no new poll meanwhile`,
      since: i.held.receivedAt,
    };
  }
  if (i.consecutiveFailures > 0) {
    const failing = i.failingForSecs !== null && i.failingForSecs > i.thresholdSecs;
    return {
      state: failing ? 'failing' : 'warning',
      detail: `polls fail (${i.consecutiveFailures} in a row${i.failingForSecs === null ? '' : `, for ${formatDuration(i.failingForSecs)}`}): ${i.lastError ?? 'unknown error'}; no dispatch can arrive meanwhile; polling again with backoff`,
      since: i.failingSince,
    };
  }
  if (!i.polling) return ok('not polling yet: starts once boot recovery is over');
  return ok(
    i.lastPollAgeSecs === null ? 'waiting for a dispatch' : `waiting for a dispatch; last answer ${formatDuration(i.lastPollAgeSecs)} ago`,
  );
}

/** What the activation backend needs, checked at start. */
export interface ActivationBackendInput {
  backend: string;
  /** One line per missing prerequisite; empty when all is there. */
  problems: readonly string[];
  checkedAt: string | null;
}

export function judgeActivationBackend(i: ActivationBackendInput): ComponentHealth {
  if (i.checkedAt === null) return ok(`${i.backend} backend: not checked yet`);
  if (i.problems.length > 0) {
    // A warning, not failing: the agent's own work goes on, and a rollout that needs the tool fails with ActivationFailed naming it.
    return {
      state: 'warning',
      detail: `${i.backend} backend cannot activate: ${i.problems.join('; ')}; a dispatch would fail with ActivationFailed (checked at start)`,
      since: i.checkedAt,
    };
  }
  return ok(`${i.backend} backend: everything it runs is there (checked at start)`);
}

/** The client identity presented to the CP. */
export interface IdentityInput {
  configured: boolean;
  cn: string | null;
  validity: 'valid' | 'expiring' | 'expired' | 'not-yet-valid' | null;
  notBefore: string | null;
  notAfter: string | null;
  secondsToExpiry: number | null;
  lastReloadError: string | null;
  /** Under this many days left, the certificate is failing (the CP refuses it soon). */
  expiringDays: number;
}

export function judgeIdentity(i: IdentityInput): ComponentHealth {
  if (!i.configured) {
    return {
      state: 'warning',
      detail:
        'no client certificate configured (--client-cert and --client-key): the agent connects without one, and a control plane that requires mutual TLS refuses it',
      since: null,
    };
  }
  const who = `client certificate CN ${i.cn ?? '?'}`;
  const left = i.secondsToExpiry;
  switch (i.validity) {
    case 'expired':
      return {
        state: 'failing',
        detail: `${who} expired${left === null ? '' : ` ${formatDuration(-left)} ago`}; the control plane refuses it until renewed files are in place (taken without a restart)`,
        since: i.notAfter,
      };
    case 'expiring':
      return {
        state: 'failing',
        detail: `${who} expires in ${left === null ? 'less than a week' : formatDuration(left)}; renew it (renewed files are taken without a restart)`,
        since: i.notAfter === null ? null : new Date(Date.parse(i.notAfter) - i.expiringDays * 86_400_000).toISOString(),
      };
    case 'not-yet-valid':
      return {
        state: 'warning',
        detail: `${who} is not valid before ${i.notBefore ?? '?'}; the control plane refuses it until then; check this host's clock`,
        since: null,
      };
    case 'valid':
    case null:
      break;
    default: {
      const never: never = i.validity;
      return never;
    }
  }
  if (i.lastReloadError !== null) return { state: 'warning', detail: i.lastReloadError, since: null };
  return ok(`${who}${left === null ? '' : `, expires in ${formatDuration(left)}`}`);
}

/** The heartbeat, as /readyz judges it, plus the last attempt. */
export interface HeartbeatInput {
  /** A heartbeat succeeded within the threshold. */
  reachable: boolean;
  thresholdSecs: number;
  lastSuccessAgeSecs: number | null;
  failingForSecs: number | null;
  consecutiveFailures: number;
  lastError: string | null;
  /** First failure of the current streak; null while the last attempt succeeded. */
  failingSince: string | null;
}

export function judgeHeartbeat(i: HeartbeatInput): ComponentHealth {
  const failures = `${i.consecutiveFailures} failure(s) in a row`;
  if (!i.reachable) {
    const forText = i.failingForSecs === null ? '' : ` for ${formatDuration(i.failingForSecs)}`;
    return {
      state: 'failing',
      detail:
        i.lastSuccessAgeSecs === null && i.consecutiveFailures === 0
          ? `no heartbeat answered yet${forText}`
          : `control plane unreachable${forText} (past ${formatDuration(i.thresholdSecs)}): ${i.lastError ?? 'no heartbeat answered yet'} (${failures}); retrying with backoff`,
      since: i.failingSince,
    };
  }
  if (i.consecutiveFailures > 0) {
    return {
      state: 'warning',
      detail: `the last attempt failed: ${i.lastError ?? 'unknown error'} (${failures}); last success ${formatDuration(i.lastSuccessAgeSecs ?? 0)} ago, unreachable after ${formatDuration(i.thresholdSecs)}`,
      since: i.failingSince,
    };
  }
  return ok(i.lastSuccessAgeSecs === null ? 'reachable' : `last heartbeat ${formatDuration(i.lastSuccessAgeSecs)} ago`);
}
