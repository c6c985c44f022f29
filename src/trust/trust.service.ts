import { Inject, Injectable, Logger, type OnApplicationBootstrap } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { errnoText } from '../common/errno';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { MetricsService } from '../metrics/metrics.service';
import type { HealthGate, HealthGateSource } from '../probes/health-gate';
import type { KeyAlgorithm } from './keys';
import { checkDispatch, DEFAULT_CLOCK_SKEW_SECS, healthGateOf, type KeySlot, MANIFEST_MAX_AGE_SECS } from './manifest';
import { type CacheLoad, ManifestCache } from './manifest-cache';
import type { Refusal } from './refusal';
import { TRUST_SETTING, type TrustSetting, unsignedWarning } from './trust-setting';

/** What a dispatch (or a resumed activation) names: checked against the manifest signed for its rollout. */
export interface TrustSubject {
  rolloutId: string;
  targetClosure: string;
}

export type VerifiedFrom = 'control-plane' | 'cache';

/** An interrupted activation runs again only within this long of its dispatch's verification. */
const RESUME_WINDOW_SECS = MANIFEST_MAX_AGE_SECS + DEFAULT_CLOCK_SKEW_SECS;

export interface LastVerified {
  rolloutId: string;
  targetClosure: string;
  keySlot: KeySlot;
  signedAt: string;
  verifiedAt: string;
  /** Where the manifest came from: fetched from the CP, or read back from `<state-dir>/rollouts/`. */
  from: VerifiedFrom;
}

export interface LastTrustFailure {
  rolloutId: string;
  targetClosure: string;
  reason: Refusal['reason'];
  detail: string;
  at: string;
  /** `dispatch`: a new order was refused; `resume`: an activation cut off by a restart was not run again. */
  during: 'dispatch' | 'resume';
}

/** `/status` `trust`. */
export interface TrustStatus {
  /** `verify`: every dispatch is checked against the trust file; `unsigned`: none is (--allow-unsigned, no trust file). */
  mode: TrustSetting['mode'];
  trustFile: string;
  /** In `unsigned` mode, the warning; null otherwise. */
  warning: string | null;
  /** The trust roots in use; null in `unsigned` mode. */
  keys: { current: KeyAlgorithm | null; previous: KeyAlgorithm | null; rejectBefore: string | null } | null;
  lastVerified: LastVerified | null;
  lastFailure: LastTrustFailure | null;
  refusedTotal: number;
  /** Dispatches acted on without verification (`unsigned` mode only). */
  unverifiedTotal: number;
}

export type ResumeCheck = { ok: true } | ({ ok: false } & Refusal);

/** What activation asks before running again an activation a restart cut off (TrustService answers). */
export interface ResumeTrust {
  checkResume(subject: TrustSubject): Promise<ResumeCheck>;
}

export const RESUME_TRUST = Symbol('RESUME_TRUST');

/**
 * The trust roots in use (PROTOCOL §12) and the verified manifests cached
 * under the state dir: records every verdict (log, metric, `/status`), checks
 * an activation a restart resumes against its cached manifest, and hands the
 * probe runners the verified health gate. Fetching belongs to the dispatch
 * module: this one needs no control plane.
 */
@Injectable()
export class TrustService implements HealthGateSource, ResumeTrust, OnApplicationBootstrap {
  private readonly logger = new Logger('Trust');
  readonly cache: ManifestCache;
  private lastVerified: LastVerified | null = null;
  private lastFailure: LastTrustFailure | null = null;
  private refusedTotal = 0;
  private unverifiedTotal = 0;
  /** Rollouts whose gate could not be read, said once each. */
  private readonly gateWarned = new Set<string>();

  constructor(
    @Inject(TRUST_SETTING) readonly setting: TrustSetting,
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    @Inject(CLOCK) private readonly clock: Clock,
    private readonly metrics: MetricsService,
  ) {
    this.cache = new ManifestCache(config.stateDir);
  }

  onApplicationBootstrap(): void {
    const setting = this.setting;
    switch (setting.mode) {
      case 'unsigned':
        this.logger.warn(`${unsignedWarning(setting.file)}; install the fleet's trust file and restart to verify them`);
        return;
      case 'verify': {
        const { current, previous, rejectBefore } = setting.roots.ciReleaseKey;
        const keys = [current && `current ${current.algorithm}`, previous && `previous ${previous.algorithm}`].filter(Boolean).join(', ');
        this.logger.log(
          `dispatches are verified with ${setting.roots.file} (${keys}${rejectBefore ? `; nothing signed before ${rejectBefore.toISOString()}` : ''})`,
        );
        if (setting.allowUnsignedIgnored) {
          this.logger.warn(`--allow-unsigned is set, but ${setting.roots.file} is there: it changes nothing, every dispatch is verified`);
        }
        return;
      }
      default: {
        const never: never = setting;
        return never;
      }
    }
  }

  /** The cached pair for a rollout, verified again now. */
  async loadCached(rolloutId: string, freshness: 'enforce' | 'ignore'): Promise<CacheLoad> {
    if (this.setting.mode !== 'verify') return { kind: 'missing' };
    return this.cache.load(rolloutId, this.setting.roots, this.clock.now(), { freshness });
  }

  recordVerified(subject: TrustSubject, verified: { keySlot: KeySlot; signedAt: Date }, from: VerifiedFrom): void {
    this.lastVerified = {
      ...subject,
      keySlot: verified.keySlot,
      signedAt: verified.signedAt.toISOString(),
      verifiedAt: this.clock.now().toISOString(),
      from,
    };
    this.metrics.recordDispatchTrust('verified');
    // The previous key still verifying is worth knowing: CI should have moved on to the current one.
    const previousKey = verified.keySlot === 'previous' ? ' with the PREVIOUS key' : '';
    this.logger.log(
      `dispatch ${subject.rolloutId} → ${subject.targetClosure} verified${previousKey} (signed ${verified.signedAt.toISOString()}, manifest from ${from === 'cache' ? 'the cache' : 'the control plane'})`,
      { rolloutId: subject.rolloutId, closure: subject.targetClosure, keySlot: verified.keySlot, manifestFrom: from },
    );
  }

  /** One warning naming the check that failed, and what happens next. */
  recordRefused(subject: TrustSubject, refusal: Refusal, during: LastTrustFailure['during']): void {
    this.lastFailure = { ...subject, reason: refusal.reason, detail: refusal.detail, at: this.clock.now().toISOString(), during };
    this.refusedTotal += 1;
    this.metrics.recordDispatchTrust('refused', refusal.reason);
    const next =
      during === 'dispatch'
        ? 'not acknowledged, nothing switched; the control plane will offer it again'
        : 'not activated again; the rollout is reported failed';
    this.logger.warn(`dispatch ${subject.rolloutId} → ${subject.targetClosure} REFUSED (${refusal.reason}): ${refusal.detail}; ${next}`, {
      rolloutId: subject.rolloutId,
      closure: subject.targetClosure,
      reason: refusal.reason,
      during,
    });
  }

  recordUnverified(subject: TrustSubject): void {
    this.unverifiedTotal += 1;
    this.metrics.recordDispatchTrust('unverified');
    if (this.setting.mode === 'unsigned') {
      this.logger.warn(`dispatch ${subject.rolloutId} → ${subject.targetClosure} acted on ${unsignedWarning(this.setting.file)}`, {
        rolloutId: subject.rolloutId,
        closure: subject.targetClosure,
      });
    }
  }

  /**
   * Before an activation cut off by a restart runs again: the pair cached when
   * the dispatch was verified must still verify and still cover it, and have
   * been cached within a manifest's window (the restart of a switch comes
   * minutes later; an old pair revived by a CP snapshot must not switch).
   * The manifest's own age is not judged again; `rejectBefore` is.
   */
  async checkResume(subject: TrustSubject): Promise<ResumeCheck> {
    if (this.setting.mode === 'unsigned') {
      this.recordUnverified(subject);
      return { ok: true };
    }
    const refusal = await this.cachedRefusal(subject);
    if (refusal === null) return { ok: true };
    this.recordRefused(subject, refusal, 'resume');
    return { ok: false, ...refusal };
  }

  /** Null when the cached pair verifies and covers the subject. */
  private async cachedRefusal(subject: TrustSubject): Promise<Refusal | null> {
    let loaded: CacheLoad;
    try {
      loaded = await this.loadCached(subject.rolloutId, 'ignore');
    } catch (err) {
      return { reason: 'cache-unreadable', detail: errnoText(err) };
    }
    switch (loaded.kind) {
      case 'missing':
        return {
          reason: 'cache-missing',
          detail: `no verified manifest is cached for ${subject.rolloutId} in ${this.cache.dir} (dispatched while the agent ran unverified, or the file was removed)`,
        };
      case 'refused':
        return { reason: loaded.reason, detail: loaded.detail };
      case 'verified': {
        const covered = checkDispatch(loaded.manifest, { ...subject, hostname: this.config.machineId });
        if (!covered.ok) return { reason: covered.reason, detail: covered.detail };
        // A CP snapshot can name any rollout Activating: an old pair must not move the host back to an old closure.
        const sinceStoredMs = this.clock.now().getTime() - loaded.storedAt.getTime();
        if (sinceStoredMs > RESUME_WINDOW_SECS * 1000) {
          return {
            reason: 'stale',
            detail: `its manifest was verified and cached at ${loaded.storedAt.toISOString()}, more than ${RESUME_WINDOW_SECS} s ago (a manifest's window plus clock skew): an activation cut off that long ago runs again only on a new dispatch`,
          };
        }
        this.recordVerified(subject, loaded, 'cache');
        return null;
      }
      default: {
        const never: never = loaded;
        return never;
      }
    }
  }

  /** HealthGateSource: the verified manifest's gate; none for an unverified rollout (said once). */
  async gateFor(rolloutId: string): Promise<HealthGate | null> {
    if (this.setting.mode !== 'verify') return null;
    let loaded: CacheLoad;
    try {
      loaded = await this.loadCached(rolloutId, 'ignore');
    } catch (err) {
      loaded = { kind: 'refused', reason: 'cache-unreadable', detail: errnoText(err) };
    }
    if (loaded.kind === 'verified') return healthGateOf(loaded.manifest);
    if (!this.gateWarned.has(rolloutId)) {
      this.gateWarned.add(rolloutId);
      const why =
        loaded.kind === 'missing'
          ? 'no verified manifest is cached for it'
          : `its cached manifest is refused (${loaded.reason}: ${loaded.detail})`;
      this.logger.warn(`rollout ${rolloutId}: ${why}; its probes run without the manifest's health gate`, { rolloutId });
    }
    return null;
  }

  status(): TrustStatus {
    const setting = this.setting;
    switch (setting.mode) {
      case 'unsigned':
        return {
          mode: 'unsigned',
          trustFile: setting.file,
          warning: unsignedWarning(setting.file),
          keys: null,
          lastVerified: null,
          lastFailure: this.lastFailure && { ...this.lastFailure },
          refusedTotal: this.refusedTotal,
          unverifiedTotal: this.unverifiedTotal,
        };
      case 'verify': {
        const ci = setting.roots.ciReleaseKey;
        return {
          mode: 'verify',
          trustFile: setting.roots.file,
          warning: null,
          keys: {
            current: ci.current?.algorithm ?? null,
            previous: ci.previous?.algorithm ?? null,
            rejectBefore: ci.rejectBefore?.toISOString() ?? null,
          },
          lastVerified: this.lastVerified && { ...this.lastVerified },
          lastFailure: this.lastFailure && { ...this.lastFailure },
          refusedTotal: this.refusedTotal,
          unverifiedTotal: this.unverifiedTotal,
        };
      }
      default: {
        const never: never = setting;
        return never;
      }
    }
  }
}
