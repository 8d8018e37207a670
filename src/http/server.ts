import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Answers one HTTP request; resolves true when it did, false to let the next route try. */
export type Route = (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean> | boolean;

/** Paths Socket.IO answers itself (it sees every request first). */
const SOCKET_IO_PATH = '/socket.io/';

/**
 * The master's one HTTP server: Socket.IO attaches to it (see bridge/bridge.ts), the routes
 * given here answer everything else, in order; what no route takes is a JSON 404.
 */
export function createHttpServer(routes: readonly Route[] = []): Server {
  return createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname.startsWith(SOCKET_IO_PATH)) return;
    void (async () => {
      for (const route of routes) if (await route(req, res, url)) return;
      sendJson(res, 404, { error: `no such path: ${url.pathname}` });
    })().catch((err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: err instanceof Error ? err.message : String(err) });
      else res.destroy();
    });
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Listens; resolves with the port in use (the real one when `port` is 0). */
export async function listen(server: Server, port: number, host: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** Stops listening and drops open connections (clients reconnect to whichever master answers). */
export async function closeServer(server: Server): Promise<void> {
  if (!server.listening) return;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  await closed;
}
