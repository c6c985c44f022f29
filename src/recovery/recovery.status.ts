import { Injectable } from '@nestjs/common';
import type { StatusContributor } from '../common/status-contributor';
import { CurrentSystemReader } from './current-system.reader';
import { type RecoveryStatus, RecoveryService } from './recovery.service';

/** `/status` `currentClosure` (read afresh; null when the link is unreadable) and `recovery`, the boot handshake. */
export interface RecoveryStatusPart {
  currentClosure: string | null;
  recovery: RecoveryStatus;
}

@Injectable()
export class RecoveryStatusContributor implements StatusContributor<RecoveryStatusPart> {
  constructor(
    private readonly recovery: RecoveryService,
    private readonly currentSystem: CurrentSystemReader,
  ) {}

  async statusPart(): Promise<RecoveryStatusPart> {
    return { currentClosure: await this.currentSystem.read(), recovery: this.recovery.status() };
  }
}
