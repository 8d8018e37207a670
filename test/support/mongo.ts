import { randomBytes } from 'node:crypto';
import mongoose from 'mongoose';
import { MongoTestServer } from './mongo-test-server.ts';

/**
 * A MongoDB for one test file: a database of its own on the real server at TEST_MONGO_URL when
 * set (e.g. the one from compose; the database is dropped on close), otherwise an in-memory
 * MongoTestServer on a free port (stopped on close; `server` lets tests simulate outages).
 */
export async function testMongo(): Promise<{ url: string; server?: MongoTestServer; close(): Promise<void> }> {
  const dbName = `tm_test_${randomBytes(6).toString('hex')}`;
  const real = process.env.TEST_MONGO_URL;
  if (real) {
    const url = withDatabase(real, dbName);
    return {
      url,
      async close() {
        const conn = await mongoose.createConnection(url, { serverSelectionTimeoutMS: 5000 }).asPromise();
        try {
          await conn.dropDatabase();
        } finally {
          await conn.close();
        }
      },
    };
  }
  const server = await MongoTestServer.start();
  return { url: server.url(dbName), server, close: () => server.close() };
}

/**
 * The URL with its database path replaced (a string match, not URL: mongodb://h1,h2/... is not a
 * WHATWG URL). With credentials, the old path was also the auth database, so it is kept as authSource.
 */
export function withDatabase(url: string, dbName: string): string {
  const m = /^(mongodb(?:\+srv)?:\/\/[^/?]+)(?:\/([^?]*))?(?:\?(.*))?$/.exec(url);
  if (!m) throw new Error(`TEST_MONGO_URL is not a mongodb:// URL: ${url}`);
  const [, base, oldDb, query] = m;
  const params = query ? query.split('&') : [];
  if (base.includes('@') && !params.some((p) => /^authSource=/i.test(p))) params.push(`authSource=${oldDb || 'admin'}`);
  return `${base}/${dbName}${params.length ? `?${params.join('&')}` : ''}`;
}
