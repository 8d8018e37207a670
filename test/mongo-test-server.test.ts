import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import mongoose, { type Connection } from 'mongoose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MongoTestServer } from './support/mongo-test-server.ts';
import { testMongo, withDatabase } from './support/mongo.ts';
import { waitFor } from './support/harness.ts';

/** The in-memory wire-protocol server, driven through real mongoose and the official driver. */
describe('MongoTestServer through mongoose', () => {
  let server: MongoTestServer;
  let conn: Connection;
  const commands: string[] = [];
  const db = 'tm_server_test';

  beforeAll(async () => {
    server = await MongoTestServer.start();
    conn = await mongoose
      .createConnection(server.url(db), {
        serverSelectionTimeoutMS: 1000,
        heartbeatFrequencyMS: 500,
        bufferCommands: false,
        monitorCommands: true,
      })
      .asPromise();
    conn.getClient().on('commandStarted', (e) => commands.push(e.commandName));
  });

  afterAll(async () => {
    await conn?.close();
    await server?.close();
  });

  const userSchema = new mongoose.Schema(
    { email: { type: String, required: true, unique: true }, name: String, age: Number, tags: [String] },
    { bufferCommands: false },
  );
  userSchema.index({ name: 1, age: -1 });

  it('creates collections and indexes, inserts, and rejects duplicate keys with a real E11000', async () => {
    const User = conn.model('User', userSchema);
    await User.init();
    const names = (await User.listIndexes()).map((ix) => ix.name).sort();
    expect(names).toEqual(['_id_', 'email_1', 'name_1_age_-1']);

    await User.insertMany([
      { email: 'ann@x.io', name: 'Ann', age: 31 },
      { email: 'bob@x.io', name: 'Bob', age: 25 },
    ]);
    expect(server.collection(db, 'users').map((d) => d.email)).toEqual(['ann@x.io', 'bob@x.io']);

    const err = await User.create({ email: 'ann@x.io', name: 'Ann again' }).catch((e) => e);
    expect(err).toBeInstanceOf(mongoose.mongo.MongoServerError);
    expect(err.code).toBe(11000);
    expect(err.keyValue).toEqual({ email: 'ann@x.io' });
    expect(err.message).toBe(
      `E11000 duplicate key error collection: ${db}.users index: email_1 dup key: { email: "ann@x.io" }`,
    );

    const existing = await User.findOne({ email: 'bob@x.io' }).lean();
    const dupId = await User.collection.insertOne({ _id: existing!._id, email: 'other@x.io' }).catch((e) => e);
    expect(dupId.code).toBe(11000);
    expect(dupId.message).toContain('index: _id_ dup key: { _id: ObjectId(');
  });

  it('bulkWrite ordered:false applies the other operations and lists the write errors', async () => {
    const User = conn.model('User', userSchema);
    const err = await User.bulkWrite(
      [
        { insertOne: { document: { email: 'cat@x.io', name: 'Cat', age: 40 } } },
        { insertOne: { document: { email: 'ann@x.io', name: 'dup' } } },
        { updateOne: { filter: { email: 'bob@x.io' }, update: { $set: { email: 'cat@x.io' } } } },
        { updateOne: { filter: { email: 'bob@x.io' }, update: { $inc: { age: 1 } } } },
      ],
      { ordered: false },
    ).catch((e) => e);
    expect(err.code).toBe(11000);
    expect(err.writeErrors.map((w: { index: number; code: number }) => [w.index, w.code])).toEqual([
      [1, 11000],
      [2, 11000],
    ]);
    expect(err.result.insertedCount).toBe(1);
    expect(err.result.modifiedCount).toBe(1);
    const bob = server.collection(db, 'users').find((d) => d.name === 'Bob');
    expect(bob).toMatchObject({ email: 'bob@x.io', age: 26 });
  });

  it('bulkWrite upserts with $setOnInsert, $set, $inc and replaceOne', async () => {
    const Stat = conn.model(
      'Stat',
      new mongoose.Schema(
        { key: { type: String, unique: true }, hits: Number, first: Date, last: String },
        { bufferCommands: false },
      ),
    );
    await Stat.init();
    const first = new Date('2020-01-01T00:00:00Z');
    const upsert = (key: string, last: string) => ({
      updateOne: {
        filter: { key },
        update: { $setOnInsert: { first }, $set: { last }, $inc: { hits: 1 } },
        upsert: true,
      },
    });
    const r1 = await Stat.bulkWrite([upsert('a', 'x'), upsert('b', 'y')]);
    expect(r1.upsertedCount).toBe(2);
    expect(Object.keys(r1.upsertedIds)).toEqual(['0', '1']);
    const r2 = await Stat.bulkWrite([
      {
        updateOne: {
          filter: { key: 'a' },
          update: { $setOnInsert: { first: new Date() }, $set: { last: 'z' }, $inc: { hits: 1 } },
          upsert: true,
        },
      },
      { replaceOne: { filter: { key: 'c' }, replacement: { key: 'c', hits: 10 }, upsert: true } },
      { replaceOne: { filter: { key: 'b' }, replacement: { key: 'b', hits: 5 } } },
    ]);
    expect([r2.matchedCount, r2.modifiedCount, r2.upsertedCount]).toEqual([2, 2, 1]);
    const docs = await Stat.find().sort({ key: 1 }).lean();
    expect(docs.map((d) => [d.key, d.hits, d.last ?? null])).toEqual([
      ['a', 2, 'z'],
      ['b', 5, null],
      ['c', 10, null],
    ]);
    expect(docs[0].first).toEqual(first); // $setOnInsert left alone on the update path
    expect(docs[0]._id).toBeInstanceOf(mongoose.Types.ObjectId);
  });

  it('finds with filter, sort, skip, limit and projection, and counts', async () => {
    const Item = conn.model(
      'Item',
      new mongoose.Schema({ n: Number, kind: String, meta: { color: String } }, { bufferCommands: false }),
    );
    await Item.insertMany(
      Array.from({ length: 20 }, (_, n) => ({
        n,
        kind: n % 2 ? 'odd' : 'even',
        meta: { color: n % 3 ? 'red' : 'blue' },
      })),
    );
    const page = await Item.find({ kind: 'odd', n: { $gte: 5 } }, { n: 1, _id: 0 })
      .sort({ n: -1 })
      .skip(1)
      .limit(3)
      .lean();
    expect(page).toEqual([{ n: 17 }, { n: 15 }, { n: 13 }]);
    expect(await Item.countDocuments({ 'meta.color': 'blue' })).toBe(7);
    expect(await Item.estimatedDocumentCount()).toBe(20);
    expect((await Item.findOne({ n: { $in: [3, 4] } }).sort({ n: -1 }))?.n).toBe(4);
    expect((await Item.distinct('kind')).sort()).toEqual(['even', 'odd']);
    expect(await Item.exists({ n: 99 })).toBeNull();
  });

  it('streams more than 101 documents through getMore', async () => {
    const Row = conn.model('Row', new mongoose.Schema({ i: Number }, { bufferCommands: false }));
    await Row.insertMany(Array.from({ length: 250 }, (_, i) => ({ i })));
    commands.length = 0;
    let count = 0;
    for await (const row of Row.find().sort({ i: 1 }).cursor()) expect(row.i).toBe(count++);
    expect(count).toBe(250);
    expect(commands).toContain('getMore');
    expect((await Row.find({ i: { $lt: 200 } }).lean()).length).toBe(200); // toArray drains getMore too
  });

  it('findOneAndUpdate, deleteMany and aggregate', async () => {
    const Job = conn.model(
      'Job',
      new mongoose.Schema(
        { name: { type: String, unique: true }, state: String, ms: Number },
        { bufferCommands: false },
      ),
    );
    await Job.init();
    const created = await Job.findOneAndUpdate(
      { name: 'j1' },
      { $set: { state: 'new' }, $setOnInsert: { ms: 5 } },
      { upsert: true, returnDocument: 'after' },
    ).lean();
    expect(created).toMatchObject({ name: 'j1', state: 'new', ms: 5 });
    const updated = await Job.findOneAndUpdate(
      { name: 'j1' },
      { $inc: { ms: 10 } },
      { returnDocument: 'after' },
    ).lean();
    expect(updated?.ms).toBe(15);
    const before = await Job.findOneAndUpdate({ name: 'j1' }, { $set: { state: 'done' } }).lean();
    expect(before?.state).toBe('new');
    expect(await Job.findOneAndUpdate({ name: 'none' }, { $set: { state: 'x' } })).toBeNull();

    await Job.insertMany([
      { name: 'j2', state: 'done', ms: 20 },
      { name: 'j3', state: 'failed', ms: 7 },
      { name: 'j4', state: 'done', ms: 1 },
      { name: 'j5', state: 'failed', ms: 3 },
    ]);
    const groups = await Job.aggregate([
      { $match: { ms: { $gt: 1 } } },
      { $group: { _id: '$state', total: { $sum: '$ms' }, n: { $sum: 1 } } },
      { $sort: { total: -1 } },
      { $limit: 1 },
    ]);
    expect(groups).toEqual([{ _id: 'done', total: 35, n: 2 }]);
    expect((await Job.findOneAndDelete({ name: 'j5' }).lean())?.ms).toBe(3);
    expect((await Job.deleteMany({ state: 'done' })).deletedCount).toBe(3);
    expect(server.collection(db, 'jobs').map((d) => d.name)).toEqual(['j3']);
  });

  it('updates with array operators, positional paths and no-op detection', async () => {
    const Cart = conn.model(
      'Cart',
      new mongoose.Schema(
        { owner: String, tags: [String], lines: [{ sku: String, qty: Number }] },
        { bufferCommands: false },
      ),
    );
    const cart = await Cart.create({
      owner: 'ann',
      tags: ['a'],
      lines: [
        { sku: 's1', qty: 1 },
        { sku: 's2', qty: 5 },
      ],
    });
    await Cart.updateOne(
      { _id: cart._id, 'lines.sku': 's1' },
      { $inc: { 'lines.$.qty': 2 }, $addToSet: { tags: 'b' } },
    );
    await Cart.updateOne(
      { _id: cart._id },
      { $set: { 'lines.$[big].qty': 0 } },
      { arrayFilters: [{ 'big.qty': { $gte: 5 } }] },
    );
    await Cart.updateOne({ _id: cart._id }, { $push: { tags: 'c' }, $unset: { owner: 1 } });
    const doc = await Cart.findById(cart._id).lean();
    expect(doc?.lines.map((l) => [l.sku, l.qty])).toEqual([
      ['s1', 3],
      ['s2', 0],
    ]);
    expect([doc?.tags, doc?.owner]).toEqual([['a', 'b', 'c'], undefined]);
    const noop = await Cart.updateOne({ _id: cart._id }, { $set: { tags: ['a', 'b', 'c'] } });
    expect([noop.matchedCount, noop.modifiedCount]).toEqual([1, 0]);
    const immutable = await Cart.collection
      .updateOne({ _id: cart._id }, { $set: { _id: new mongoose.Types.ObjectId() } })
      .catch((e) => e);
    expect(immutable.code).toBe(66);
  });

  it('answers unknown commands with CommandNotFound', async () => {
    const err = await conn.db!.command({ frobnicate: 1 }).catch((e) => e);
    expect(err.code).toBe(59);
    expect(err.message).toContain('frobnicate');
  });

  it('survives an outage: stop() fails operations, start() on the same port recovers the connection', async () => {
    const Note = conn.model('Note', new mongoose.Schema({ text: String }, { bufferCommands: false }));
    await Note.create({ text: 'before' });
    const port = server.port;

    await server.stop();
    // An operation fails (commands are not buffered) rather than waiting for the server.
    const err = await Note.findOne({}).catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toMatch(/MongoServerSelectionError|MongoNetworkError|MongoPoolClearedError/);

    await server.start();
    expect(server.port).toBe(port);
    let found: { text?: string | null } | null = null;
    await waitFor(async () => {
      found = await Note.findOne({ text: 'before' })
        .lean()
        .catch(() => null);
      return found !== null;
    }, 'the connection to recover');
    await Note.create({ text: 'after' });
    expect(server.collection(db, 'notes').map((d) => d.text)).toEqual(['before', 'after']);
  });
});

describe('MongoTestServer as a process and through testMongo()', () => {
  it('runs standalone with --port and prints the port', async () => {
    const script = fileURLToPath(new URL('./support/mongo-test-server.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script, '--port', '0'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const [line] = (await once(child.stdout!, 'data')) as [Buffer];
      const port = Number(/^listening (\d+)/.exec(line.toString())?.[1]);
      expect(port).toBeGreaterThan(0);
      const conn = await mongoose
        .createConnection(`mongodb://127.0.0.1:${port}/tm_cli?directConnection=true`, {
          serverSelectionTimeoutMS: 2000,
        })
        .asPromise();
      expect(await conn.db!.admin().ping()).toMatchObject({ ok: 1 });
      await conn.close();
    } finally {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    }
  });

  it('testMongo() gives each call its own database', async () => {
    const a = await testMongo();
    const b = await testMongo();
    try {
      expect(a.url).toMatch(/\/tm_test_[0-9a-f]+/);
      expect(a.url).not.toBe(b.url);
      expect(withDatabase('mongodb://u:p@h1,h2/admin?replicaSet=rs', 'tm_test_x')).toBe(
        'mongodb://u:p@h1,h2/tm_test_x?replicaSet=rs&authSource=admin',
      );
      if (process.env.TEST_MONGO_URL) return;
      const conn = await mongoose.createConnection(a.url, { serverSelectionTimeoutMS: 2000 }).asPromise();
      await conn.collection('x').insertOne({ ok: true });
      expect(a.server!.collection(conn.name, 'x')).toHaveLength(1);
      await conn.close();
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
