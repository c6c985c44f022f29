import { Controller, Get, Inject } from '@nestjs/common';
import type { StatusContributor } from '../common/status-contributor';
import { STATUS_CONTRIBUTORS } from './admin.constants';
import { STATUS_KEYS } from './status-keys';
import type { StatusDocument } from './status.contract';

/**
 * `GET /status`: what an operator asks first. Each module contributes its
 * own keys; the document is typed in status.contract.ts (a contract: absent
 * values are null, no key material).
 */
@Controller()
export class StatusController {
  constructor(@Inject(STATUS_CONTRIBUTORS) private readonly contributors: readonly StatusContributor[]) {}

  @Get('status')
  async status(): Promise<StatusDocument> {
    const parts = await Promise.all(this.contributors.map((c) => Promise.resolve(c.statusPart())));
    const merged: Partial<Record<keyof StatusDocument, unknown>> = {};
    for (const part of parts) Object.assign(merged, part);
    // In the contract's key order, whatever order the modules answered in.
    return Object.fromEntries(STATUS_KEYS.map((key) => [key, merged[key]])) as unknown as StatusDocument;
  }
}
