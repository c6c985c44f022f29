import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import type { INestApplication, LoggerService } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { AdminHttpAdapter } from './admin/admin-http';
import { AgentModule } from './agent.module';
import type { AgentConfig } from './config/config.loader';
import type { ListenAddress } from './config/listen-address';

/**
 * Builds the agent's Nest application (not yet listening). Its only HTTP
 * surface is the read-only admin listener: no body is ever parsed.
 */
export async function createAgentApp(config: AgentConfig, logger: LoggerService | false): Promise<INestApplication> {
  const app = await NestFactory.create(AgentModule.forRoot(config), new AdminHttpAdapter(), {
    logger,
    bufferLogs: false,
    abortOnError: false,
    bodyParser: false,
  });
  return app;
}

/** Opens the admin listener. A unix socket is created 0600: /status is for this host's operators only. */
export async function listenAdmin(app: INestApplication, address: ListenAddress): Promise<void> {
  switch (address.kind) {
    case 'tcp':
      await app.listen(address.port, address.host);
      return;
    case 'unix': {
      removeStaleSocket(address.path);
      // umask, not chmod afterwards: no window in which the socket is open to others.
      const previous = process.umask(0o177);
      try {
        await app.listen(address.path);
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
