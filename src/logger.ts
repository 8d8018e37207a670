import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * The one root logger. Components take `log.child({ component })`, runs take
 * `log.child({ jobId, module })`. Pretty on a terminal, JSON lines otherwise; tokens and
 * passwords in URLs never reach the output.
 */
export function createLogger(opts: { level: string; pretty?: boolean; destination?: number }): Logger {
  const pretty = opts.pretty ?? Boolean(process.stderr.isTTY);
  return pino(
    {
      level: opts.level,
      base: { pid: process.pid },
      redact: {
        paths: ['token', '*.token', 'auth.token', 'query.token', 'password', '*.password', 'redisUrl', 'mongoUrl'],
        censor: '***',
      },
      transport: pretty
        ? {
            target: 'pino-pretty',
            options: { destination: opts.destination ?? 2, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' },
          }
        : undefined,
    },
    pretty ? undefined : pino.destination({ fd: opts.destination ?? 2, sync: false }),
  );
}
