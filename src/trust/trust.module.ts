import { Module } from '@nestjs/common';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { loadTrustSetting, TRUST_SETTING, type TrustSetting } from './trust-setting';
import { RESUME_TRUST, TrustService } from './trust.service';
import { TrustStatusContributor } from './trust.status';

/**
 * main.ts has already loaded and checked the trust file (a bad one is exit 2
 * before anything starts); this is the setting put into use.
 */
async function startupTrust(config: AgentConfig): Promise<TrustSetting> {
  const loaded = await loadTrustSetting(config);
  if (!loaded.ok) throw new Error(loaded.problems.join('; '));
  return loaded.setting;
}

/**
 * PROTOCOL §12 on the host: the trust roots, the verified manifests cached
 * under the state dir, every verdict recorded; the verified health gate for
 * the probe runners. It needs no control plane (the dispatch module fetches).
 */
@Module({
  providers: [
    { provide: TRUST_SETTING, inject: [AGENT_CONFIG], useFactory: startupTrust },
    TrustService,
    { provide: RESUME_TRUST, useExisting: TrustService },
    TrustStatusContributor,
  ],
  exports: [TrustService, RESUME_TRUST, TrustStatusContributor],
})
export class TrustModule {}
