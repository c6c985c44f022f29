import { Inject, Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { type Clock, CLOCK } from '../clock/clock';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { ACTIVATION_BACKEND } from './activation.constants';
import type { ActivationBackend, ActivationPreflightStatus } from './activation.types';

/**
 * Checks once, at start, that the activation backend has what it runs (for
 * `nixos`: nix-env, systemd-run, the store), so that a missing tool is said
 * in the log and on /status before a rollout needs it, not by its failure.
 * A problem does not stop the agent: heartbeats, the event log and delivery
 * do not need these tools, and the tool may be installed before a dispatch.
 */
@Injectable()
export class ActivationPreflight implements OnModuleInit {
  private readonly logger = new Logger(ActivationPreflight.name);
  private checkedAt: Date | null = null;
  private problems: string[] = [];

  constructor(
    @Inject(ACTIVATION_BACKEND) private readonly backend: ActivationBackend,
    @Inject(AGENT_CONFIG) private readonly config: AgentConfig,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  async onModuleInit(): Promise<void> {
    this.problems = await this.backend.preflight(this.config.execSearchPath);
    this.checkedAt = this.clock.now();
    if (this.problems.length > 0) {
      this.logger.warn(
        `activation backend ${this.backend.name} (--activation-backend) cannot activate: ${this.problems.join('; ')}; the agent runs on, but a dispatch to this host fails with ActivationFailed until this is fixed (checked at start)`,
      );
    }
  }

  status(): ActivationPreflightStatus {
    return { checkedAt: this.checkedAt?.toISOString() ?? null, problems: [...this.problems] };
  }

  get backendName(): string {
    return this.backend.name;
  }
}
