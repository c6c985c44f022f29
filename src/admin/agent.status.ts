import { Inject, Injectable } from '@nestjs/common';
import { Uptime } from '../clock/uptime';
import type { StatusContributor } from '../common/status-contributor';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { AGENT_VERSION } from '../version';

/** `/status`'s head: which agent this is, for which host and CP, and since when. */
export interface AgentStatusPart {
  machineId: string;
  agentVersion: string;
  controlPlaneUrl: string;
  pid: number;
  startedAt: string;
  uptimeSecs: number;
}

/** The admin module's own part: what belongs to the process, not to a feature. */
@Injectable()
export class AgentStatusContributor implements StatusContributor<AgentStatusPart> {
  constructor(
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    private readonly uptime: Uptime,
  ) {}

  statusPart(): AgentStatusPart {
    return {
      machineId: this.config.machineId,
      agentVersion: AGENT_VERSION,
      controlPlaneUrl: this.config.controlPlaneUrl,
      pid: process.pid,
      startedAt: this.uptime.startedAt.toISOString(),
      uptimeSecs: this.uptime.seconds(),
    };
  }
}
