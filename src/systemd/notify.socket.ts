import { getSystemErrorName } from 'node:util';
import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import type * as UnixDgram from 'unix-dgram';
import type { UnixDgramError, UnixDgramSocket } from 'unix-dgram';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { notifyTarget } from './notify.format';

/**
 * The unix datagram socket to systemd's NOTIFY_SOCKET. Node's `dgram` is
 * UDP only; unix-dgram sends from this process, so systemd sees the main
 * PID (what NotifyAccess=main accepts). A failed send is warned about once
 * and the agent carries on: a lost notification must never stop it.
 */
@Injectable()
export class NotifySocket implements OnApplicationShutdown {
  private readonly logger = new Logger(NotifySocket.name);
  /** Where datagrams go; null when there is nowhere (not under systemd, or an address we cannot reach). */
  private readonly address: string | null;
  private readonly shown: string;
  private socket: UnixDgramSocket | null = null;
  private closed = false;
  /** The failure being warned about; cleared (and logged) when a send works again. */
  private failing: string | null = null;

  constructor(@Inject(AGENT_CONFIG) config: AgentConfig) {
    const raw = config.systemd.notifySocket;
    this.shown = raw ?? '';
    this.address = raw === null ? null : this.usable(raw);
  }

  /** False: nothing is ever sent, so the service above starts no timers. */
  get enabled(): boolean {
    return this.address !== null;
  }

  send(datagram: string): void {
    if (this.address === null || this.closed) return;
    const socket = this.socket ?? this.open();
    if (socket === null) return;
    const buf = Buffer.from(datagram, 'utf8');
    socket.send(buf, 0, buf.length, this.address, (err) => (err ? this.failed(errText(err)) : this.sent()));
  }

  /** Last of the shutdown: STOPPING=1 went out in onModuleDestroy, before every other service's shutdown work. */
  onApplicationShutdown(): void {
    this.closed = true;
    const socket = this.socket;
    this.socket = null;
    if (socket === null) return;
    try {
      socket.close();
    } catch (err) {
      this.logger.warn(`closing the notify socket failed: ${errText(err as UnixDgramError)}; the process exits anyway`);
    }
  }

  private usable(raw: string): string | null {
    const target = notifyTarget(raw);
    switch (target.kind) {
      case 'path':
        return target.address;
      case 'abstract':
        // unix-dgram strncpy()s the address (stopping at the leading NUL) and always passes
        // sizeof(sockaddr_un): an abstract name would reach a different, all-zero name.
        this.logger.warn(
          `NOTIFY_SOCKET=${raw} is an abstract socket, which this agent's unix-dgram transport cannot address; no READY=1, WATCHDOG=1 or STATUS= will reach systemd (a Type=notify unit then fails to start in time). Run it under a manager whose NOTIFY_SOCKET is a path, as systemd's /run/systemd/notify is`,
        );
        return null;
      case 'unsupported':
        this.logger.warn(`NOTIFY_SOCKET=${raw} is not usable: ${target.reason}; no sd_notify messages will be sent`);
        return null;
      default: {
        const never: never = target;
        return never;
      }
    }
  }

  private open(): UnixDgramSocket | null {
    try {
      // Loaded at the first send, so only under a service manager: the native addon and node:dgram are no use without one.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { createSocket } = require('unix-dgram') as typeof UnixDgram;
      const socket = createSocket('unix_dgram');
      // unix-dgram emits 'error' for failures outside a send callback; unhandled, it would crash the agent.
      socket.on('error', (err: UnixDgramError) => this.failed(errText(err)));
      this.socket = socket;
      return socket;
    } catch (err) {
      this.failed(`cannot create a unix datagram socket: ${errText(err as UnixDgramError)}`);
      return null;
    }
  }

  private failed(why: string): void {
    if (this.failing !== null) return;
    this.failing = why;
    this.logger.warn(
      `cannot notify systemd through ${this.shown}: ${why}; READY/WATCHDOG/STATUS messages are lost until it works again (with WatchdogSec= set, systemd restarts the agent once pings stay away); the agent carries on`,
    );
  }

  private sent(): void {
    if (this.failing === null) return;
    this.logger.log(`notifying systemd through ${this.shown} works again (after: ${this.failing})`);
    this.failing = null;
  }
}

/** unix-dgram reports errno as a negative number: name it (ECONNREFUSED), as Node's own errors do. */
function errText(err: UnixDgramError): string {
  if (typeof err.code === 'number' && err.code < 0) {
    let name: string;
    try {
      name = getSystemErrorName(err.code);
    } catch {
      return `errno ${-err.code}`;
    }
    switch (name) {
      case 'ECONNREFUSED':
        return 'ECONNREFUSED (nothing listens on it)';
      case 'ENOENT':
        return 'ENOENT (no such socket)';
      case 'EAGAIN':
        return 'EAGAIN (systemd is not reading its notify socket fast enough)';
      default:
        return name;
    }
  }
  return err.message;
}
