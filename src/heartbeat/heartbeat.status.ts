import { Injectable } from '@nestjs/common';
import type { StatusContributor } from '../common/status-contributor';
import { type HeartbeatStatus, HeartbeatService } from './heartbeat.service';

/** `/status` `heartbeat`: the steady job's last attempt, success, error and next due time. */
export interface HeartbeatStatusPart {
  heartbeat: HeartbeatStatus;
}

@Injectable()
export class HeartbeatStatusContributor implements StatusContributor<HeartbeatStatusPart> {
  constructor(private readonly heartbeat: HeartbeatService) {}

  statusPart(): HeartbeatStatusPart {
    return { heartbeat: this.heartbeat.status() };
  }
}
