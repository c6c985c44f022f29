import type { LoggerService } from '@nestjs/common';

/** The part of `process` this needs; tests pass an EventEmitter. */
export interface SignalSource {
  on(signal: 'SIGHUP', listener: () => void): unknown;
}

export const EARLY_SIGHUP_LINE =
  'SIGHUP received before start-up finished; nothing to reload: the certificate files are read as the agent starts, and re-read once it runs';

/**
 * Node's default for SIGHUP is to exit, silently: a `systemctl reload` (or a
 * renewal hook) that lands while the agent is still starting would kill it.
 * Installed first thing in `run`; until `reloadWith` hands over the real
 * reload, a SIGHUP is only logged. One listener for the life of the process,
 * so there is no instant without one.
 */
export function holdReloadSignal(logger: LoggerService, source: SignalSource = process): { reloadWith(reload: () => void): void } {
  let reload: (() => void) | null = null;
  source.on('SIGHUP', () => {
    if (reload === null) {
      logger.log(EARLY_SIGHUP_LINE, 'Reload');
      return;
    }
    reload();
  });
  return {
    reloadWith(next) {
      reload = next;
    },
  };
}
