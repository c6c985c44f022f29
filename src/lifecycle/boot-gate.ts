import { Injectable } from '@nestjs/common';

export interface BootResult {
  reachedControlPlane: boolean;
}

/**
 * Opens once the boot-recovery handshake is over (PROTOCOL §3); every worker
 * waits on it. A provider with no dependencies, so workers that the handshake
 * itself depends on (the drainer behind the replay port) can wait on it too.
 */
@Injectable()
export class BootGate {
  private resolveOpen!: (result: BootResult) => void;
  private readonly opened = new Promise<BootResult>((resolve) => {
    this.resolveOpen = resolve;
  });
  private result: BootResult | null = null;

  open(result: BootResult): void {
    if (this.result) return;
    this.result = result;
    this.resolveOpen(result);
  }

  whenOpen(): Promise<BootResult> {
    return this.opened;
  }

  isOpen(): boolean {
    return this.result !== null;
  }
}
