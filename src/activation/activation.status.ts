import { Injectable } from '@nestjs/common';
import type { StatusContributor } from '../common/status-contributor';
import { ActivationPreflight } from './activation.preflight';
import { ActivationService } from './activation.service';
import type { ActivationPreflightStatus, ActivationStatus } from './activation.types';

/** `/status` `activation`: the backend, what runs and waits, the last result, and the start-up check. */
export interface ActivationStatusPart {
  activation: ActivationSectionStatus;
}

export interface ActivationSectionStatus extends ActivationStatus {
  preflight: ActivationPreflightStatus;
}

@Injectable()
export class ActivationStatusContributor implements StatusContributor<ActivationStatusPart> {
  constructor(
    private readonly activation: ActivationService,
    private readonly preflight: ActivationPreflight,
  ) {}

  statusPart(): ActivationStatusPart {
    return { activation: { ...this.activation.status(), preflight: this.preflight.status() } };
  }
}
