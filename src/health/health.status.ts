import { Injectable } from '@nestjs/common';
import type { StatusContributor } from '../common/status-contributor';
import type { ComponentsHealth } from './component-health';
import { ComponentHealthService } from './components.service';

/** `/status` `components`: each part of the agent's work judged ok, warning or failing; what `status` reads first. */
export interface HealthStatusPart {
  components: ComponentsHealth;
}

@Injectable()
export class HealthStatusContributor implements StatusContributor<HealthStatusPart> {
  constructor(private readonly components: ComponentHealthService) {}

  statusPart(): HealthStatusPart {
    return { components: this.components.components() };
  }
}
