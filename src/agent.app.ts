import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import type { Server } from 'node:http';
import type { INestApplication, LoggerService } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AdminHttpAdapter } from './admin/admin-http';
import { AgentModule } from './agent.module';
import type { AgentConfig } from './config/config.loader';
import { errnoText } from './common/errno';
import { formatListenAddress, type ListenAddress } from './config/listen-address';

/**
 * Builds the agent's Nest application (not yet listening). Its only HTTP
 * surface is the read-only admin listener: no body is ever parsed.
 */
export async function createAgentApp(
  config: AgentConfig,
  logger: LoggerService | false,
  adapter: AdminHttpAdapter = new AdminHttpAdapter(),
): Promise<INestApplication> {
  const app = await NestFactory.create(AgentModule.forRoot(config), adapter, {
    logger,
    bufferLogs: false,
    abortOnError: false,
    bodyParser: false,
  });
  return app;
}

/** Opens the admin listener of an app that is built and initialised (tests); the agent itself uses `bindAdmin`. */
export async function listenAdmin(app: INestApplication, address: ListenAddress): Promise<void> {
  await listenAt(address, async (target) => {
    if ('path' in target) await app.listen(target.path);
    else await app.listen(target.port, target.host);
  });
}

export type AdminBinding = { ok: true; adapter: AdminHttpAdapter } | { ok: false; problem: string };

/**
 * Binds the admin listener before the app is built, so that a taken address
 * stops the agent before any job starts (no heartbeat, nothing to undo), and
 * nothing can take it between a check and the use. Requests wait until
 * `adapter.open()`, once the app is initialised.
 */
export async function bindAdmin(address: ListenAddress): Promise<AdminBinding> {
  const adapter = new AdminHttpAdapter();
  adapter.initHttpServer();
  adapter.holdRequests();
  const server = adapter.getHttpServer() as Server;
  try {
    await listenAt(
      address,
      (target) =>
        new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          const done = (): void => {
            server.off('error', reject);
            resolve();
          };
          if ('path' in target) server.listen(target.path, done);
          else server.listen(target.port, target.host, done);
        }),
    );
  } catch (err) {
    return { ok: false, problem: `cannot listen on ${formatListenAddress(address)}: ${listenErrorText(err, address)}` };
  }
  return { ok: true, adapter };
}

function listenErrorText(err: unknown, address: ListenAddress): string {
  switch ((err as NodeJS.ErrnoException).code) {
    case 'EADDRINUSE':
      return 'the address is already in use (another agent, or another program, listens there); stop it, or give this agent another address';
    case 'EADDRNOTAVAIL':
      return 'no interface of this host has that address';
    case 'EACCES':
      return address.kind === 'unix'
        ? "permission denied (the agent's user cannot create a socket in that directory)"
        : 'permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE)';
    case undefined: // not the socket's error (a unix path that is no socket): errnoText keeps its message
    default:
      return errnoText(err);
  }
}

/** A unix socket is created 0600: /status is for this host's operators only. */
async function listenAt(
  address: ListenAddress,
  listen: (target: { port: number; host: string } | { path: string }) => Promise<void>,
): Promise<void> {
  switch (address.kind) {
    case 'tcp':
      await listen({ port: address.port, host: address.host });
      return;
    case 'unix': {
      removeStaleSocket(address.path);
      // umask, not chmod afterwards: no window in which the socket is open to others.
      const previous = process.umask(0o177);
      try {
        await listen({ path: address.path });
      } finally {
        process.umask(previous);
      }
      return;
    }
    default: {
      const never: never = address;
      return never;
    }
  }
}

function removeStaleSocket(path: string): void {
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  unlinkSync(path);
}
