import { Controller, Get, Inject } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { AGENT_VERSION } from '../version';

@Controller()
export class StatusController {
  private readonly startedAt: Date;
  private readonly startedMono: number;

  constructor(
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {
    this.startedAt = clock.now();
    this.startedMono = clock.monotonicMs();
  }

  @Get('status')
  status(): Record<string, unknown> {
    return {
      machineId: this.config.machineId,
      agentVersion: AGENT_VERSION,
      controlPlaneUrl: this.config.controlPlaneUrl,
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      uptimeSecs: Math.floor((this.clock.monotonicMs() - this.startedMono) / 1000),
    };
  }
}
