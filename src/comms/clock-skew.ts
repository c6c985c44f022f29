import { Injectable } from '@nestjs/common';

/**
 * How far the control plane's clock is ahead of ours (negative: behind), as
 * last estimated, ±1 s. The heartbeat exchange records it from the CP's Date
 * header; the certificate checks here quote it. It lives in comms, beside
 * its reader, so the arrow points recovery → comms and never back.
 */
@Injectable()
export class ClockSkew {
  private estimate: number | null = null;

  /** null before the CP's first answer with a usable Date header. */
  get secs(): number | null {
    return this.estimate;
  }

  record(secs: number): void {
    this.estimate = secs;
  }
}
