import { Module } from '@nestjs/common';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { CurrentSystemReader } from '../recovery/current-system.reader';
import { LifecycleModule } from '../lifecycle/lifecycle.module';
import { serveEffectPort } from '../reducer/effect-ports';
import { ReducerModule } from '../reducer/reducer.module';
import { TrustModule } from '../trust/trust.module';
import {
  ACTIVATION_BACKEND,
  DEFAULT_ACTIVATION_TIMEOUT_MS,
  DEFAULT_REALISE_TIMEOUT_MS,
  DEFAULT_SWITCH_LOCK_WAIT_MS,
  NIXOS_DEFAULTS,
} from './activation.constants';
import { ActivationPreflight } from './activation.preflight';
import { ActivationService } from './activation.service';
import { ActivationStatusContributor } from './activation.status';
import type { ActivationBackend } from './activation.types';

/** Only the configured backend's code is loaded: a host runs one of them for its whole life. */
export async function backendFor(config: AgentConfig, currentSystem: CurrentSystemReader): Promise<ActivationBackend> {
  const { storeDir } = config;
  switch (config.activationBackend) {
    case 'symlink': {
      const { SymlinkBackend } = await import('./backends/symlink.backend');
      return new SymlinkBackend({ storeDir, currentSystemPath: config.currentSystemPath }, currentSystem);
    }
    case 'command': {
      if (config.activationCommand === undefined) {
        throw new Error('--activation-backend command needs --activation-command (the config loader should have refused this)');
      }
      const { CommandBackend } = await import('./backends/command.backend');
      return new CommandBackend({ storeDir, command: config.activationCommand, timeoutMs: DEFAULT_ACTIVATION_TIMEOUT_MS }, currentSystem);
    }
    case 'nixos': {
      const { NixosBackend } = await import('./backends/nixos.backend');
      return new NixosBackend(
        {
          storeDir,
          systemProfile: config.systemProfile,
          timeoutMs: DEFAULT_ACTIVATION_TIMEOUT_MS,
          realiseTimeoutMs: DEFAULT_REALISE_TIMEOUT_MS,
          switchLockWaitMs: DEFAULT_SWITCH_LOCK_WAIT_MS,
          ...NIXOS_DEFAULTS,
        },
        currentSystem,
      );
    }
    default: {
      const never: never = config.activationBackend;
      return never;
    }
  }
}

/**
 * The activation backends (checked at start by ActivationPreflight) behind
 * the reducer's FireSwitch and FireRollback ports, which it serves; the
 * outcomes go back to the reducer as inputs (REDUCER_INPUT). It reads the
 * current system with its own CurrentSystemReader (stateless but for log
 * dedup), so it needs neither RecoveryModule nor the comms behind it.
 */
@Module({
  imports: [ReducerModule, LifecycleModule, TrustModule],
  providers: [
    CurrentSystemReader,
    { provide: ACTIVATION_BACKEND, inject: [AGENT_CONFIG, CurrentSystemReader], useFactory: backendFor },
    ActivationService,
    ActivationPreflight,
    serveEffectPort('FireSwitch', ActivationService),
    serveEffectPort('FireRollback', ActivationService),
    ActivationStatusContributor,
  ],
  exports: [ActivationPreflight, ActivationStatusContributor],
})
export class ActivationModule {}
