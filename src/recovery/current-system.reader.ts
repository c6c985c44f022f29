import { readlinkSync } from 'node:fs';
import { basename } from 'node:path';
import { Inject, Injectable, Logger } from '@nestjs/common';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';

/** Reads which closure the host runs: the basename of the `/run/current-system` link's target. */
@Injectable()
export class CurrentSystemReader {
  private readonly logger = new Logger(CurrentSystemReader.name);
  private lastProblem: string | null = null;

  constructor(@Inject(AGENT_CONFIG) private readonly config: AgentConfig) {}

  get path(): string {
    return this.config.currentSystemPath;
  }

  /**
   * null when the link is missing or not a link: the heartbeat then omits
   * `current_closure`. Read synchronously: a readlink of /run/current-system
   * (tmpfs) takes microseconds, where the promise form sends it through the
   * thread pool and back, waking a pool thread and the loop once more on
   * every heartbeat and every advance tick.
   */
  read(): Promise<string | null> {
    return Promise.resolve(this.readNow());
  }

  private readNow(): string | null {
    try {
      const target = readlinkSync(this.config.currentSystemPath);
      this.lastProblem = null;
      const name = basename(target.replace(/\/+$/, ''));
      return name === '' ? null : name;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
      if (code !== 'ENOENT' && code !== 'EINVAL' && this.lastProblem !== code) {
        // Said once per kind of problem, not on every heartbeat.
        this.logger.warn(
          `cannot read the current-system link ${this.config.currentSystemPath} (${code}); heartbeats omit current_closure until it is readable`,
        );
      }
      this.lastProblem = code;
      return null;
    }
  }
}
