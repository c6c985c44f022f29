import { STATUS_CODES, type IncomingMessage } from 'node:http';
import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, HttpStatus, Logger } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';

/** A client-chosen path in a log line is cut to this many characters. */
const MAX_LOGGED_PATH = 120;

/**
 * Every error of the admin listener ends here. Nest's default filter logs
 * any error that is not an HttpException with its stack, at error level,
 * and what a client sends can raise such errors: any local user could fill
 * the journal with "agent errors". Here a client's bad request is answered
 * quietly with a short JSON error, and an unexpected failure becomes one
 * warning line, without a stack, and a 500.
 */
@Catch()
export class AdminExceptionFilter implements ExceptionFilter {
  private readonly logger = new Logger('AdminHttp');

  constructor(private readonly adapterHost: HttpAdapterHost) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    const http = host.switchToHttp();
    const req = http.getRequest<IncomingMessage>();
    const res: unknown = http.getResponse();
    const { status, body } = this.answer(exception, req);
    const adapter = this.adapterHost.httpAdapter;
    if (adapter.isHeadersSent(res)) adapter.end(res);
    else adapter.reply(res, body, status);
  }

  private answer(exception: unknown, req: IncomingMessage): { status: number; body: object } {
    // Ours (404 for an unknown path, 503 from /healthz and /readyz) and what Nest maps from a bad URL.
    if (exception instanceof HttpException) {
      const status = exception.getStatus();
      const response = exception.getResponse();
      return { status, body: typeof response === 'object' ? response : { statusCode: status, message: response } };
    }
    // An http-errors 4xx (Express's own parsing): the client's fault, said to the client only.
    const clientStatus = clientErrorStatus(exception);
    if (clientStatus !== null) {
      return { status: clientStatus, body: { statusCode: clientStatus, message: STATUS_CODES[clientStatus] ?? 'Bad Request' } };
    }
    const path = (req.url ?? '').slice(0, MAX_LOGGED_PATH);
    const what = exception instanceof Error ? `${exception.name}: ${exception.message}` : String(exception);
    this.logger.warn(`${req.method ?? '?'} ${path} failed: ${what}; answered 500, the agent goes on`);
    return {
      status: HttpStatus.INTERNAL_SERVER_ERROR,
      body: { statusCode: HttpStatus.INTERNAL_SERVER_ERROR, message: 'Internal server error' },
    };
  }
}

function clientErrorStatus(exception: unknown): number | null {
  if (typeof exception !== 'object' || exception === null) return null;
  const { status, statusCode } = exception as { status?: unknown; statusCode?: unknown };
  const code = typeof statusCode === 'number' ? statusCode : status;
  return typeof code === 'number' && code >= 400 && code < 500 ? code : null;
}
