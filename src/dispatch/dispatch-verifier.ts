import { Inject, Injectable, Logger } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import { errnoText } from '../common/errno';
import { describeFailure } from '../comms/cp-failure';
import { ControlPlaneClient, type RolloutArtifact } from '../comms/control-plane.client';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { pause } from '../jobs/wait';
import type { DispatchOrder } from '../protocol/dispatch.wire';
import { checkDispatch, verifyManifest } from '../trust/manifest';
import { type CacheLoad, isCacheableRolloutId, UnsafeRolloutIdError } from '../trust/manifest-cache';
import type { Refusal } from '../trust/refusal';
import { TrustService, type TrustSubject } from '../trust/trust.service';

/** Fetch attempts per artifact, and the waits between them (doubling), unless `Retry-After` says otherwise (capped). */
const FETCH_ATTEMPTS = 3;
const FETCH_RETRY_FIRST_MS = 1_000;
const FETCH_RETRY_CAP_MS = 30_000;

/** What to do with a dispatch: act on it (verified, or unverified by the operator's choice), refuse it, or nothing (stopping). */
export type DispatchVerdict = { kind: 'act' } | { kind: 'refused'; refusal: Refusal } | { kind: 'stopped' };

/**
 * PROTOCOL §12 for one dispatch, before anything is acknowledged or
 * switched: the manifest signed for its rollout must verify with the trust
 * roots and name exactly this host and this target. A pair already cached
 * (the CP offering the same dispatch again) is verified again and used
 * without a fetch; a cached pair that no longer verifies was changed on disk
 * and is refused, not silently replaced.
 */
@Injectable()
export class DispatchVerifier {
  private readonly logger = new Logger('Trust');

  constructor(
    private readonly client: ControlPlaneClient,
    private readonly trust: TrustService,
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  async judge(order: DispatchOrder, signal: AbortSignal): Promise<DispatchVerdict> {
    const subject: TrustSubject = { rolloutId: order.rollout_id, targetClosure: order.target_closure };
    if (this.trust.setting.mode === 'unsigned') {
      this.trust.recordUnverified(subject);
      return { kind: 'act' };
    }
    const refusal = await this.refusalOf(subject, signal);
    if (signal.aborted) return { kind: 'stopped' };
    if (refusal !== null) {
      this.trust.recordRefused(subject, refusal, 'dispatch');
      return { kind: 'refused', refusal };
    }
    return { kind: 'act' };
  }

  /** Writes the pairs a full disk kept in memory; called before each poll (nothing to do, nearly always). */
  async storeHeld(): Promise<void> {
    await this.trust.cache.storeHeld();
  }

  /** Null when the dispatch is covered by a verified manifest (now cached). */
  private async refusalOf(subject: TrustSubject, signal: AbortSignal): Promise<Refusal | null> {
    const setting = this.trust.setting;
    if (setting.mode !== 'verify') return null;
    if (!isCacheableRolloutId(subject.rolloutId)) {
      return {
        reason: 'rollout-id',
        detail: `rollout id ${JSON.stringify(subject.rolloutId.slice(0, 80))} is not <channel>@<channelRef> without "/" and ".."`,
      };
    }
    const check = { ...subject, hostname: this.config.machineId };

    let cached: CacheLoad;
    try {
      cached = await this.trust.loadCached(subject.rolloutId, 'enforce');
    } catch (err) {
      cached = { kind: 'refused', reason: 'cache-unreadable', detail: errnoText(err) };
    }
    switch (cached.kind) {
      case 'verified': {
        const covered = checkDispatch(cached.manifest, check);
        if (!covered.ok) return { reason: covered.reason, detail: covered.detail };
        this.trust.recordVerified(subject, cached, 'cache');
        return null;
      }
      case 'refused': {
        // Past its window: the CP may hold a newer signature of the rollout.
        if (cached.reason === 'stale') break;
        // This offer is refused; the pair is moved aside, so the next one is judged on a fresh fetch, not wedged on a file.
        let next: string;
        try {
          next = `moved aside to ${await this.trust.cache.quarantine(subject.rolloutId, this.clock.now())}; the next offer fetches the manifest afresh`;
        } catch (err) {
          next = `could not be moved aside (${errnoText(err)}), so it is refused until removed`;
        }
        return { reason: cached.reason, detail: `${cached.detail}; the cached pair ${next}` };
      }
      case 'missing':
        break;
      default: {
        const never: never = cached;
        return never;
      }
    }

    const manifest = await this.fetch(subject.rolloutId, 'manifest', signal);
    if (!manifest.ok) return manifest.refusal;
    const signature = await this.fetch(subject.rolloutId, 'signature', signal);
    if (!signature.ok) return signature.refusal;
    const verified = verifyManifest(manifest.bytes, signature.bytes, setting.roots, this.clock.now());
    if (!verified.ok) return { reason: verified.reason, detail: verified.detail };
    const covered = checkDispatch(verified.manifest, check);
    if (!covered.ok) return { reason: covered.reason, detail: covered.detail };
    try {
      await this.trust.cache.store(subject.rolloutId, manifest.bytes, signature.bytes, this.clock.now());
    } catch (err) {
      if (err instanceof UnsafeRolloutIdError) return { reason: 'rollout-id', detail: err.message };
      // Verified all the same: acting on it is safe. Refusing would lose an order the CP may hand out once.
      this.logger.warn(
        `the manifest of ${subject.rolloutId} verified, but cannot be stored in ${this.trust.cache.dir} (${errnoText(err)}); it is held in memory and stored once the disk takes writes (a restart before that cannot resume this rollout)`,
        { rolloutId: subject.rolloutId, closure: subject.targetClosure },
      );
    }
    this.trust.recordVerified(subject, verified, 'control-plane');
    return null;
  }

  /**
   * One artifact, tried up to FETCH_ATTEMPTS times while the failure may pass
   * (no answer, 5xx, 429; `Retry-After` honoured up to a cap): a blip must not
   * cost a dispatch the CP may not offer again. A 4xx is final at once.
   */
  private async fetch(
    rolloutId: string,
    artifact: RolloutArtifact,
    signal: AbortSignal,
  ): Promise<{ ok: true; bytes: Buffer } | { ok: false; refusal: Refusal }> {
    for (let attempt = 1; ; attempt += 1) {
      const result = await this.client.fetchRolloutArtifact(rolloutId, artifact, { signal });
      if (result.ok) return { ok: true, bytes: result.response.body };
      const failure = result.failure;
      const final = failure.kind === 'http-status' && failure.status < 500 && failure.status !== 429;
      if (final || attempt >= FETCH_ATTEMPTS || signal.aborted) {
        const tries = attempt > 1 ? ` after ${attempt} attempts` : '';
        return {
          ok: false,
          refusal: {
            reason: 'manifest-unavailable',
            detail: `the control plane did not serve the ${artifact}${tries} (${describeFailure(failure)})`,
          },
        };
      }
      const retryAfterSecs = failure.kind === 'http-status' ? failure.retryAfterSecs : null;
      const waitMs =
        retryAfterSecs === null ? FETCH_RETRY_FIRST_MS * 2 ** (attempt - 1) : Math.min(retryAfterSecs * 1000, FETCH_RETRY_CAP_MS);
      if (!(await pause(waitMs, signal)))
        return { ok: false, refusal: { reason: 'manifest-unavailable', detail: 'the agent is stopping' } };
    }
  }
}
