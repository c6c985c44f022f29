import { type FSWatcher, statSync, watch } from 'node:fs';
import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { CERT_EXPIRY_WARNING_DAYS } from '../clock/thresholds';
import { errnoText } from '../common/errno';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { JobRuntime } from '../jobs/job-runtime.service';
import { failed, type JobHandle, type JobResult, ok } from '../jobs/job.types';
import { ClockSkew } from './clock-skew';
import { IdentityError, loadIdentity, type TlsIdentity } from './identity';
import { TlsAgentHolder } from './tls-agent.holder';
import { watchPoints, type WatchPoints } from './watch-points';

/**
 * The files are watched (inotify) where a change to them shows: their
 * directories, not the files, since a renewal replaces them by rename (a new
 * inode, which a watch on the old file never sees), and every symlink on the
 * way to them, since secret managers such as sops-nix or agenix swap a
 * symlinked directory above them. What a watch cannot see (a filesystem
 * without inotify, a directory that is not there yet, a watch limit reached)
 * a slow poll of stat() does, which follows the path to whatever is there
 * now: a wake-up a minute rather than one every 2 s.
 */
export const IDENTITY_POLL_MS = 60_000;
/** The first poll after start: files changed between main's load and the watches' start are taken then. */
export const IDENTITY_FIRST_POLL_MS = 2_000;
/** Quiet time after a change is seen before the files are read: a renewal writes cert and key one after the other. */
export const IDENTITY_SETTLE_MS = 200;
export const IDENTITY_POLL_NAME = 'identity-poll';
/** A clock-skew estimate beyond this is named as a likely cause of a validity problem. */
export const SKEW_NOTE_SECS = 60;

const DAY_MS = 86_400_000;

export type CertificateValidity = 'valid' | 'expiring' | 'expired' | 'not-yet-valid';

/** `/status` `certificate`: what the agent presents, never key material or PEM. */
export interface CertificateStatus {
  cn: string;
  machineId: string;
  keyType: string;
  notBefore: string;
  notAfter: string;
  validity: CertificateValidity;
  secondsToExpiry: number;
  daysToExpiry: number;
  fingerprint256: string;
  /** When changed files were last taken into use; null: still the identity the agent started with. */
  lastReloadAt: string | null;
  /** Why the files on disk are not in use; null when they are. */
  lastReloadError: string | null;
}

type Client = NonNullable<TlsIdentity['client']>;

/** What a re-read of the identity files found. Identities are described by CN and notAfter, never key material. */
export type ReloadOutcome =
  | { kind: 'unchanged'; identity: string }
  | { kind: 'reloaded'; now: string; was: string }
  | { kind: 'refused'; why: string; keeping: string };

export function reloadText(outcome: Extract<ReloadOutcome, { kind: 'reloaded' }>): string {
  return `now ${outcome.now}, was ${outcome.was}; new connections use it, calls in flight finish on the old one`;
}

export function refusalText(outcome: Extract<ReloadOutcome, { kind: 'refused' }>): string {
  return `${outcome.why}; keeping the current identity (${outcome.keeping})`;
}

function refusalLine(outcome: Extract<ReloadOutcome, { kind: 'refused' }>): string {
  return `client identity files changed but cannot be used: ${refusalText(outcome)}`;
}

/**
 * Re-reads the CA, client certificate and key when they change (a renewal),
 * validates them as at start, and only then switches new connections to them.
 * Also says when the certificate in use is expiring, expired or not yet valid.
 * The check is a job of the runtime: triggered by a watch, and a poll every
 * minute from the start.
 */
@Injectable()
export class IdentityWatcher implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly logger = new Logger(IdentityWatcher.name);
  /** stat() signature of the files when last read; null forces a read (files may change between main's load and here). */
  private seen: string | null = null;
  /** Why the files on disk are not in use (for /status); null when they are. */
  private refusal: string | null = null;
  /** The refusal last logged, so a poll does not repeat it. */
  private toldRefusal: string | null = null;
  private lastReloadAt: Date | null = null;
  /** What the last validity statement was about, and when (monotonic) it was made. */
  private told: { key: string; atMono: number } | null = null;
  private readonly job: JobHandle;
  /** Where the files' changes show, and the watch on each such directory (keyed by the directory's identity: a swap replaces it). */
  private points: WatchPoints = new Map();
  private readonly watches = new Map<string, { identity: string; watcher: FSWatcher }>();
  private settling: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    @Inject(CLOCK) private readonly clock: Clock,
    private readonly holder: TlsAgentHolder,
    private readonly skew: ClockSkew,
    runtime: JobRuntime,
  ) {
    this.job = runtime.register({
      name: IDENTITY_POLL_NAME,
      afterBoot: false,
      schedule: { kind: 'every', intervalMs: IDENTITY_POLL_MS, firstAfterMs: IDENTITY_FIRST_POLL_MS },
      backoff: { firstMs: IDENTITY_POLL_MS, capMs: IDENTITY_POLL_MS },
      run: () => this.poll(),
    });
  }

  /*
   * An expired or not-yet-valid certificate at start is said here, not made
   * a config error (exit 2, which systemd does not restart): a renewal may be
   * on its way, or this host's clock may be the thing that is wrong, and an
   * agent that runs takes the renewed files and shows the problem on /status.
   */
  onApplicationBootstrap(): void {
    const client = this.holder.currentIdentity().client;
    if (client) {
      this.logger.log(
        `client certificate ${this.config.clientCert}: CN "${client.cn}", valid until ${client.notAfter.toISOString()}; its files are re-read when they change (watched, and checked every ${IDENTITY_POLL_MS / 1000} s)`,
      );
    } else {
      this.logger.warn(
        'no client certificate configured (--client-cert and --client-key): the agent connects to the control plane without one, and a control plane that requires mutual TLS refuses it; /status shows this under components.identity',
      );
    }
    this.reviewValidity();
    this.watchFiles();
  }

  onModuleDestroy(): void {
    this.closed = true;
    if (this.settling) clearTimeout(this.settling);
    for (const dir of [...this.watches.keys()]) this.unwatch(dir);
  }

  /** The job's run: after a change seen by a watch, or on the slow poll. */
  private poll(): JobResult {
    try {
      // A swapped symlink moves what there is to watch: looked at again each time.
      this.watchFiles();
      this.check();
      return ok();
    } catch (err) {
      const cause = (err as Error).message;
      this.logger.error(
        `checking the identity files failed: ${cause}; keeping the current identity, next check in ${IDENTITY_POLL_MS / 1000} s`,
      );
      return failed(cause);
    }
  }

  /** One poll: take changed files if they are good, then restate validity if due. */
  check(): void {
    const signature = this.signature();
    if (signature !== this.seen) {
      this.seen = signature;
      const outcome = this.reload();
      switch (outcome.kind) {
        case 'unchanged':
          break;
        case 'reloaded':
          this.logger.log(`client identity reloaded: ${reloadText(outcome)}`);
          break;
        case 'refused': {
          const line = refusalLine(outcome);
          // A renewal job that keeps writing the same bad files is told once, not every poll.
          if (line !== this.toldRefusal) this.logger.warn(line);
          this.toldRefusal = line;
          break;
        }
        default: {
          const never: never = outcome;
          return never;
        }
      }
    }
    this.reviewValidity();
  }

  /**
   * Re-reads the files now, changed or not (SIGHUP: an operator who has just
   * put renewed files in place should not wait for the poll, nor doubt that
   * they were looked at). The caller says what came of it; nothing is logged here.
   */
  checkNow(): ReloadOutcome {
    this.seen = this.signature();
    const outcome = this.reload();
    // The caller says this refusal; the poll repeats it only if it changes.
    if (outcome.kind === 'refused') this.toldRefusal = refusalLine(outcome);
    this.reviewValidity();
    return outcome;
  }

  /** For the expiry metric; negative once expired; null without a client certificate. */
  secondsToExpiry(): number | null {
    const client = this.holder.currentIdentity().client;
    return client ? secondsUntil(client.notAfter, this.clock.now()) : null;
  }

  certificateStatus(): CertificateStatus | null {
    const client = this.holder.currentIdentity().client;
    if (!client) return null;
    const now = this.clock.now();
    const secondsToExpiry = secondsUntil(client.notAfter, now);
    return {
      cn: client.cn,
      machineId: client.machineId,
      keyType: client.keyType,
      notBefore: client.notBefore.toISOString(),
      notAfter: client.notAfter.toISOString(),
      validity: validityOf(client, now),
      secondsToExpiry,
      daysToExpiry: Math.floor(secondsToExpiry / 86_400),
      fingerprint256: client.fingerprint256,
      lastReloadAt: this.lastReloadAt?.toISOString() ?? null,
      lastReloadError: this.refusal,
    };
  }

  private reload(): ReloadOutcome {
    let next: TlsIdentity;
    try {
      next = loadIdentity(this.config);
    } catch (err) {
      const why = err instanceof IdentityError ? err.problems.map((p) => p.what).join('; ') : (err as Error).message;
      const refused = { kind: 'refused' as const, why, keeping: describe(this.holder.currentIdentity()) };
      this.refusal = refusalLine(refused);
      return refused;
    }
    this.refusal = null;
    this.toldRefusal = null;
    const current = this.holder.currentIdentity();
    if (sameIdentity(current, next)) return { kind: 'unchanged', identity: describe(current) };
    // Expired or not-yet-valid files are taken too, as a restart would take
    // them: the CP judges validity by its clock, which may not be ours.
    this.holder.replace(next);
    this.lastReloadAt = this.clock.now();
    this.told = null;
    return { kind: 'reloaded', now: describe(next), was: describe(current) };
  }

  private reviewValidity(): void {
    const client = this.holder.currentIdentity().client;
    if (!client) return;
    const now = this.clock.now();
    const validity = validityOf(client, now);
    const skew = this.clockSkewSecs();
    const skewNote = skew !== null && Math.abs(skew) > SKEW_NOTE_SECS ? clockNote(skew) : '';
    const where = `client certificate ${this.config.clientCert ?? ''} (CN "${client.cn}")`;
    let line: string;
    switch (validity) {
      case 'valid':
        this.told = null;
        return;
      case 'expiring':
        line = `${where} expires in ${duration(secondsUntil(client.notAfter, now))}, at ${client.notAfter.toISOString()}; renew it before then or the control plane will refuse this agent (renewed files are taken without a restart)`;
        break;
      case 'expired':
        line = `${where} expired at ${client.notAfter.toISOString()}, ${duration(-secondsUntil(client.notAfter, now))} ago; the control plane refuses it until renewed files are in place, which the agent takes without a restart${skewNote}`;
        break;
      case 'not-yet-valid':
        line = `${where} is not valid until ${client.notBefore.toISOString()}, in ${duration(secondsUntil(client.notBefore, now))}; the control plane refuses it until then${skewNote}`;
        break;
      default: {
        const never: never = validity;
        return never;
      }
    }
    // Said again when the state (or what the skew suggests) changes, else once a day.
    const key = `${client.fingerprint256}|${validity}|${skewNote === '' ? '' : Math.sign(skew ?? 0)}`;
    const mono = this.clock.monotonicMs();
    if (this.told && this.told.key === key && mono - this.told.atMono < DAY_MS) return;
    this.told = { key, atMono: mono };
    if (validity === 'expiring') this.logger.warn(line);
    else this.logger.error(line);
  }

  private clockSkewSecs(): number | null {
    return this.skew.secs;
  }

  /** Keeps one watch on each directory where a change to the files shows (a directory that cannot be watched is left to the poll). */
  private watchFiles(): void {
    if (this.closed) return;
    const paths = [this.config.caCert, this.config.clientCert, this.config.clientKey].filter((p): p is string => p !== undefined);
    this.points = watchPoints(paths);
    for (const dir of [...this.watches.keys()]) if (!this.points.has(dir)) this.unwatch(dir);
    for (const dir of this.points.keys()) {
      let identity: string;
      try {
        const s = statSync(dir);
        identity = `${s.dev}:${s.ino}`;
      } catch {
        this.unwatch(dir);
        continue;
      }
      if (this.watches.get(dir)?.identity === identity) continue;
      this.unwatch(dir);
      try {
        // Not persistent: what keeps the daemon alive is its listener and its work.
        const watcher = watch(dir, { persistent: false }, (_event, name) => {
          if (name === null || this.points.get(dir)?.has(name)) this.changed();
        });
        watcher.on('error', () => this.unwatch(dir));
        this.watches.set(dir, { identity, watcher });
      } catch {
        // No inotify here, or its limit reached: the poll covers this directory.
      }
    }
  }

  private unwatch(dir: string): void {
    this.watches.get(dir)?.watcher.close();
    this.watches.delete(dir);
  }

  /** A change seen: the files are read once they have been quiet for a moment. */
  private changed(): void {
    if (this.closed) return;
    if (this.settling) {
      this.settling.refresh();
      return;
    }
    // Not a job: the quiet time of one burst of changes, after which the job runs.
    this.settling = setTimeout(() => {
      this.settling = null;
      this.job.trigger();
    }, IDENTITY_SETTLE_MS);
    this.settling.unref();
  }

  /** Changes with any replacement (rename: new inode), rewrite or chmod of the files; errors count as a state too. */
  private signature(): string {
    return [this.config.caCert, this.config.clientCert, this.config.clientKey]
      .map((path) => {
        if (path === undefined) return '-';
        try {
          const s = statSync(path, { bigint: true });
          return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
        } catch (err) {
          return `!${errnoText(err)}`;
        }
      })
      .join('|');
  }
}

export function validityOf(client: Client, now: Date): CertificateValidity {
  if (now < client.notBefore) return 'not-yet-valid';
  if (now > client.notAfter) return 'expired';
  if (client.notAfter.getTime() - now.getTime() < CERT_EXPIRY_WARNING_DAYS * DAY_MS) return 'expiring';
  return 'valid';
}

function secondsUntil(when: Date, now: Date): number {
  return Math.floor((when.getTime() - now.getTime()) / 1000);
}

function clockNote(skewSecs: number): string {
  return `; this host's clock may be wrong: the control plane's clock is ${Math.round(Math.abs(skewSecs))} s ${skewSecs > 0 ? 'ahead' : 'behind'}`;
}

function duration(secs: number): string {
  const s = Math.max(0, secs);
  if (s >= 86_400) return plural(Math.floor(s / 86_400), 'day');
  if (s >= 3_600) return plural(Math.floor(s / 3_600), 'hour');
  if (s >= 60) return plural(Math.floor(s / 60), 'minute');
  return plural(s, 'second');
}

function plural(n: number, unit: string): string {
  return `${n} ${unit}${n === 1 ? '' : 's'}`;
}

function describe(identity: TlsIdentity): string {
  const c = identity.client;
  return c ? `CN "${c.cn}", valid until ${c.notAfter.toISOString()}` : 'no client certificate';
}

function sameIdentity(a: TlsIdentity, b: TlsIdentity): boolean {
  return a.ca === b.ca && a.client?.certPem === b.client?.certPem && a.client?.keyPem === b.client?.keyPem;
}
