import { ConsoleLogger, type LogLevel } from '@nestjs/common';
import type { AgentLogLevel, LogFormat } from '../config/settings';

const LEVELS: Record<AgentLogLevel, LogLevel[]> = {
  error: ['fatal', 'error'],
  warn: ['fatal', 'error', 'warn'],
  info: ['fatal', 'error', 'warn', 'log'],
  debug: ['fatal', 'error', 'warn', 'log', 'debug'],
  verbose: ['fatal', 'error', 'warn', 'log', 'debug', 'verbose'],
};

/** Nest's own logger: one JSON object per line for journald and log shippers, or text for a terminal. */
export function createAgentLogger(format: LogFormat, level: AgentLogLevel): ConsoleLogger {
  return new ConsoleLogger('nixfleet-agent', {
    json: format === 'json',
    colors: format === 'text' && process.stdout.isTTY === true,
    logLevels: LEVELS[level],
    prefix: 'nixfleet-agent',
  });
}
