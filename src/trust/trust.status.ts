import { Injectable } from '@nestjs/common';
import type { StatusContributor } from '../common/status-contributor';
import { type TrustStatus, TrustService } from './trust.service';

/** `/status` `trust`: how dispatches are judged, the last one verified, the last one refused and why. */
export interface TrustStatusPart {
  trust: TrustStatus;
}

@Injectable()
export class TrustStatusContributor implements StatusContributor<TrustStatusPart> {
  constructor(private readonly trust: TrustService) {}

  statusPart(): TrustStatusPart {
    return { trust: this.trust.status() };
  }
}
