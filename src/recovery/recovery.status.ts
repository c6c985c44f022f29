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
    // Taken before the read: every other part is taken when the request arrives, and the document must be one instant
    // (a handshake ending during the read would show recovery over while heartbeat has not taken its result yet).
    const recovery = this.recovery.status();
    return { currentClosure: await this.currentSystem.read(), recovery };
  }
}
