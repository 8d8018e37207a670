import { createReadStream, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';

const PUBLIC_DIR = fileURLToPath(new URL('./public', import.meta.url));
const require = createRequire(import.meta.url);

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/**
 * Third-party browser files, served from node_modules so the page works offline: the chart
 * library, and the Socket.IO client (the server's own copy; the bridge does not serve it).
 */
function vendorFiles(): Map<string, string> {
  const uplot = join(dirname(require.resolve('uplot/package.json')), 'dist');
  const socketIo = join(dirname(require.resolve('socket.io/package.json')), 'client-dist');
  return new Map([
    ['uPlot.iife.min.js', join(uplot, 'uPlot.iife.min.js')],
    ['uPlot.min.css', join(uplot, 'uPlot.min.css')],
    ['socket.io.min.js', join(socketIo, 'socket.io.min.js')],
  ]);
}

/** Every file under `dir`, by its path relative to it (`js/api.js`). */
function filesUnder(dir: string, base = ''): Map<string, string> {
  const out = new Map<string, string>();
  for (const entry of readdirSync(join(dir, base), { withFileTypes: true })) {
    const rel = base ? `${base}/${entry.name}` : entry.name;
    if (entry.isDirectory()) for (const [k, v] of filesUnder(dir, rel)) out.set(k, v);
    else if (TYPES[extname(entry.name)]) out.set(rel, join(dir, rel));
  }
  return out;
}

function send(reply: FastifyReply, path: string): FastifyReply {
  // no-cache: the browser revalidates, so a page served after an upgrade never mixes versions.
  return reply
    .type(TYPES[extname(path)] ?? 'application/octet-stream')
    .header('cache-control', 'no-cache')
    .send(createReadStream(path));
}

/**
 * The status page: `GET /` and its files under `/assets/` (plain ES modules, no build step),
 * with the vendor files under `/assets/vendor/`. Only the files listed at start are served, so
 * no request path reaches the file system. The data comes from the JSON API and the `/status`
 * Socket.IO namespace; auth is the server's hook, which covers these routes too.
 */
export async function dashboardRoutes(app: FastifyInstance): Promise<void> {
  const assets = filesUnder(PUBLIC_DIR);
  const vendor = vendorFiles();
  const page = assets.get('index.html')!;
  assets.delete('index.html');

  app.get('/', (_req, reply) => send(reply, page));
  app.get<{ Params: { '*': string } }>('/assets/*', (req, reply) => {
    const name = req.params['*'];
    const path = name.startsWith('vendor/') ? vendor.get(name.slice('vendor/'.length)) : assets.get(name);
    if (!path) return reply.code(404).send({ error: `no such asset: ${name}`, code: 'NOT_FOUND' });
    return send(reply, path);
  });
}
