import { Injectable } from '@nestjs/common';
import type { StatusContributor } from '../common/status-contributor';
import { type CertificateStatus, IdentityWatcher } from './identity-watcher';

/** `/status` `certificate`: the client certificate in use; no key material, no PEM. */
export interface CommsStatusPart {
  certificate: CertificateStatus | null;
}

@Injectable()
export class CommsStatusContributor implements StatusContributor<CommsStatusPart> {
  constructor(private readonly identity: IdentityWatcher) {}

  statusPart(): CommsStatusPart {
    return { certificate: this.identity.certificateStatus() };
  }
}
