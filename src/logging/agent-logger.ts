import { ConsoleLogger, type LogLevel } from '@nestjs/common';
import type { AgentLogLevel, LogFormat } from '../config/settings';

const LEVELS: Record<AgentLogLevel, LogLevel[]> = {
  error: ['fatal', 'error'],
  warn: ['fatal', 'error', 'warn'],
  info: ['fatal', 'error', 'warn', 'log'],
  debug: ['fatal', 'error', 'warn', 'log', 'debug'],
  verbose: ['fatal', 'error', 'warn', 'log', 'debug', 'verbose'],
};

/** Nest's own start-up narration: useful when debugging, noise in an operator's journal. */
const FRAMEWORK_CONTEXTS = new Set(['NestFactory', 'InstanceLoader', 'RoutesResolver', 'RouterExplorer', 'NestApplication']);

/** Nest's logger: one JSON object per line for journald and log shippers, or text for a terminal. */
export class AgentLogger extends ConsoleLogger {
  constructor(format: LogFormat, level: AgentLogLevel) {
    super('nixfleet-agent', {
      json: format === 'json',
      colors: format === 'text' && process.stdout.isTTY === true,
      logLevels: LEVELS[level],
      prefix: 'nixfleet-agent',
    });
  }

  override log(message: unknown, ...rest: unknown[]): void {
    const context = rest[rest.length - 1];
    if (typeof context === 'string' && FRAMEWORK_CONTEXTS.has(context)) {
      super.debug(message, ...rest);
      return;
    }
    super.log(message, ...rest);
  }
}

export function createAgentLogger(format: LogFormat, level: AgentLogLevel): AgentLogger {
  return new AgentLogger(format, level);
}
