/**
 * A MongoDB wire-protocol server that keeps its data in memory.
 *
 * This is test infrastructure for the archive suite, not a database offered to users: there is
 * no MongoDB on the machines that run the tests, so this speaks just enough of the protocol
 * (OP_QUERY handshake, OP_MSG commands) for mongoose and the official driver to work against
 * it. Query matching, projections, update operators and aggregation are done by mingo; unique
 * indexes, cursors and the reply shapes are done here, shaped like a real server's so that the
 * driver raises its real errors (a duplicate key is a MongoServerError with code 11000).
 *
 * stop()/start() simulate an outage: the listener and every socket go away, the data stays,
 * and the server comes back on the same port.
 *
 * It refuses what MongoDB 7.0 refuses of a document it is asked to store, with the same codes
 * and messages: a document over 16 MiB (insert, update and upsert each say it their own way),
 * nesting deeper than 180 levels, and `$`-prefixed field names at the top level of an update
 * that changes an existing document (replacement, or an operator's path). Since 5.0, MongoDB
 * stores `$`-prefixed and dotted names anywhere else (inserts, upserts that insert, below the
 * top level). `version: '4.4'` gives the older rules instead: an update refuses `$`-prefixed
 * names at any level, an insert at the top level.
 *
 * Run alone: node --import tsx test/support/mongo-test-server.ts --port N  (prints "listening N")
 */
/* eslint-disable @typescript-eslint/no-explicit-any -- documents and commands are arbitrary BSON, typed by the wire */
import { createServer, type Server, type Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import { BSON, Long, ObjectId } from 'bson';
import { Aggregator, ProcessingMode, Query, updateOne as pipelineUpdate } from 'mingo';
import { updateOne as operatorUpdate } from 'mingo/updater';

type Doc = Record<string, any>;
type IndexSpec = {
  v: number;
  key: Doc;
  name: string;
  unique?: boolean;
  sparse?: boolean;
  partialFilterExpression?: Doc;
};

const OP_REPLY = 1;
const OP_QUERY = 2004;
const OP_MSG = 2013;
const MAX_BATCH_BYTES = 8 * 1024 * 1024; // well under maxBsonObjectSize, so a reply always fits
/** BSONObjMaxUserSize: the largest document the server stores. */
const MAX_DOCUMENT_BYTES = 16 * 1024 * 1024;
/** BSONObjMaxInternalSize: the largest document a message may carry (a stored one plus room around it). */
const MAX_MESSAGE_DOCUMENT_BYTES = MAX_DOCUMENT_BYTES + 16 * 1024;
/** BSONDepth::getMaxDepthForUserStorage(): a stored document's top-level fields are level 1. */
const MAX_STORAGE_DEPTH = 180;

export type MongoVersion = '7.0' | '4.4';

/** A command failure (`ok: 0`), turned into a MongoServerError by the driver. */
class CommandError extends Error {
  constructor(
    readonly code: number,
    readonly codeName: string,
    message: string,
    readonly extra: Doc = {},
  ) {
    super(message);
  }
}

const clone = <T extends Doc>(doc: T): T => BSON.deserialize(BSON.serialize(doc)) as T; // keeps ObjectId, Long, ...
/** A canonical string for a value, so that equal BSON values give equal keys (used for unique indexes). */
const keyOf = (v: unknown): string => BSON.EJSON.stringify({ v }, { relaxed: false });
/** mingo's find(), minus its copying mingo's operator tables twice per call. */
const mingoFind = (docs: Iterable<Doc>, filter: Doc = {}, projection?: Doc, collation?: any) =>
  new Query(filter, { collation }).find(docs, projection);
const isOperatorDoc = (v: unknown): v is Doc =>
  !!v && typeof v === 'object' && v.constructor === Object && Object.keys(v).some((k) => k.startsWith('$'));

function getPath(doc: unknown, path: string): unknown {
  let cur: any = doc;
  for (const part of path.split('.')) cur = cur == null ? undefined : cur[part];
  return cur;
}

function setPath(doc: Doc, path: string, value: unknown): void {
  const parts = path.split('.');
  let cur = doc;
  for (const part of parts.slice(0, -1)) cur = cur[part] ??= {};
  cur[parts[parts.length - 1]] = value;
}

/** Like the real server's errmsg: { email: "a@b.c" }, { _id: ObjectId('...') }. */
function formatKey(keyValue: Doc): string {
  const fmt = (v: unknown): string =>
    v instanceof ObjectId
      ? `ObjectId('${v.toHexString()}')`
      : typeof v === 'string'
        ? JSON.stringify(v)
        : v === undefined
          ? 'null'
          : String(BSON.EJSON.stringify(v));
  return `{ ${Object.entries(keyValue)
    .map(([k, v]) => `${k}: ${fmt(v)}`)
    .join(', ')} }`;
}

/** Any failure as the server would report it; mingo's own errors (bad operators, conflicting paths) are BadValue. */
function asCommandError(err: unknown): CommandError {
  if (err instanceof CommandError) return err;
  const message = (err as Error).message;
  return /immutable field/.test(message)
    ? new CommandError(66, 'ImmutableField', message)
    : new CommandError(2, 'BadValue', message);
}

/** A value holding fields of its own in BSON (a subdocument or an array), as opposed to ObjectId, Date, ... */
const isContainer = (v: unknown): v is Doc =>
  Array.isArray(v) || (!!v && typeof v === 'object' && (v.constructor === Object || !v.constructor));

/** The deepest level of doc's fields (its own are level 1), counting no further than `stop`. */
function nesting(doc: Doc, level = 0, stop = MAX_STORAGE_DEPTH + 1): number {
  let deepest = level;
  for (const v of Object.values(doc)) {
    deepest = Math.max(deepest, isContainer(v) ? nesting(v, level + 1, stop) : level + 1);
    if (deepest >= stop) break;
  }
  return deepest;
}

type WriteKind = 'insert' | 'update' | 'upsert';

/** The size and depth limits, refused as the server refuses them for each kind of write. */
function assertStorable(doc: Doc, kind: WriteKind): void {
  const bytes = BSON.calculateObjectSize(doc);
  const max = MAX_DOCUMENT_BYTES;
  if (bytes > max) {
    if (kind === 'insert') {
      throw new CommandError(2, 'BadValue', `object to insert too large. size in bytes: ${bytes}, max size: ${max}`);
    }
    if (kind === 'update') {
      throw new CommandError(17419, 'Location17419', `Resulting document after update is larger than ${max}`);
    }
    throw new CommandError(17420, 'Location17420', `Document to upsert is larger than ${max}`);
  }
  if (nesting(doc) > MAX_STORAGE_DEPTH) {
    const depth = MAX_STORAGE_DEPTH;
    if (kind === 'insert') {
      throw new CommandError(15, 'Overflow', `cannot insert document because it exceeds ${depth} levels of nesting`);
    }
    throw new CommandError(15, 'Overflow', `Document exceeds maximum nesting depth of ${depth}`);
  }
}

/** DBRef fields, which may start with `$` (storage_validation.cpp checks their order; this does not). */
const DBREF_FIELDS = new Set(['$ref', '$id', '$db']);

/**
 * The first `$`-prefixed field name of doc (not a DBRef's) with its dotted path: at its top level
 * only, or at any level (names inside arrays are indexes, but documents in arrays are looked into).
 */
function dollarField(doc: Doc, anyLevel: boolean, path = ''): { name: string; path: string } | undefined {
  for (const [name, v] of Object.entries(doc)) {
    const at = Array.isArray(doc) ? `${path}.${name}` : path ? `${path}.${name}` : name;
    if (!Array.isArray(doc) && name.startsWith('$') && !DBREF_FIELDS.has(name)) return { name, path: at };
    if (anyLevel && isContainer(v)) {
      const found = dollarField(v, true, at);
      if (found) return found;
    }
  }
  return undefined;
}

/** Since 5.0: a `$`-prefixed name where an update that changes a document may not put one. */
const dollarInUpdate = (f: { name: string; path: string }) =>
  new CommandError(
    52,
    'DollarPrefixedFieldName',
    `The dollar ($) prefixed field '${f.name}' in '${f.path}' is not allowed in the context of an update's ` +
      'replacement document. Consider using an aggregation pipeline with $replaceWith.',
  );
/** Before 5.0: a `$`-prefixed name anywhere in what an update stores. */
const dollarNotStorable = (f: { name: string; path: string }) =>
  new CommandError(
    52,
    'DollarPrefixedFieldName',
    `The dollar ($) prefixed field '${f.name}' in '${f.path}' is not valid for storage.`,
  );

function duplicateKey(ns: string, index: IndexSpec, doc: Doc): CommandError {
  const keyValue = Object.fromEntries(Object.keys(index.key).map((f) => [f, getPath(doc, f) ?? null]));
  const msg = `E11000 duplicate key error collection: ${ns} index: ${index.name} dup key: ${formatKey(keyValue)}`;
  return new CommandError(11000, 'DuplicateKey', msg, { keyPattern: index.key, keyValue });
}

/** The documents (in natural order, keyed by _id) and indexes of one collection. */
class Collection {
  docs = new Map<string, Doc>();
  indexes: IndexSpec[] = [{ v: 2, key: { _id: 1 }, name: '_id_' }];
  /** For each unique index but _id_: index key -> _id key of the document holding it. */
  unique = new Map<string, Map<string, string>>();
  /** Unique indexes that have seen an array value: lookups by value would miss array elements. */
  multikey = new Set<string>();

  constructor(readonly ns: string) {}

  /** The entry of doc in a unique index, or undefined when the index skips it (sparse, partial). */
  private indexKey(index: IndexSpec, doc: Doc): string | undefined {
    const values = Object.keys(index.key).map((f) => getPath(doc, f));
    if (values.some(Array.isArray)) this.multikey.add(index.name);
    if (index.sparse && values.every((v) => v === undefined)) return undefined;
    if (index.partialFilterExpression && !new Query(index.partialFilterExpression).test(doc)) return undefined;
    return keyOf(values.map((v) => v ?? null));
  }

  addIndex(spec: IndexSpec): void {
    if (spec.unique && spec.name !== '_id_') {
      const entries = new Map<string, string>();
      for (const [id, doc] of this.docs) {
        const k = this.indexKey(spec, doc);
        if (k === undefined) continue;
        if (entries.has(k)) throw duplicateKey(this.ns, spec, doc);
        entries.set(k, id);
      }
      this.unique.set(spec.name, entries);
    }
    this.indexes.push(spec);
  }

  dropIndex(name: string): void {
    this.indexes = this.indexes.filter((ix) => ix.name !== name);
    this.unique.delete(name);
    this.multikey.delete(name);
  }

  /** Stores doc (new, or replacing the document with the same _id), after checking every unique index. */
  put(doc: Doc, replacing?: Doc): void {
    const id = keyOf(doc._id);
    if (!replacing && this.docs.has(id)) throw duplicateKey(this.ns, this.indexes[0], doc);
    for (const ix of this.indexes) {
      const k = this.unique.has(ix.name) ? this.indexKey(ix, doc) : undefined;
      const owner = k === undefined ? undefined : this.unique.get(ix.name)!.get(k);
      if (owner !== undefined && owner !== id) throw duplicateKey(this.ns, ix, doc);
    }
    if (replacing) this.unindex(replacing);
    this.docs.set(id, doc); // replacing keeps the document's place in natural order
    for (const [name, entries] of this.unique) {
      const k = this.indexKey(
        this.indexes.find((ix) => ix.name === name)!,
        doc,
      );
      if (k !== undefined) entries.set(k, id);
    }
  }

  remove(doc: Doc): void {
    this.unindex(doc);
    this.docs.delete(keyOf(doc._id));
  }

  private unindex(doc: Doc): void {
    for (const [name, entries] of this.unique) {
      const k = this.indexKey(
        this.indexes.find((ix) => ix.name === name)!,
        doc,
      );
      if (k !== undefined && entries.get(k) === keyOf(doc._id)) entries.delete(k);
    }
  }

  /** Matching documents, in natural order or sorted. Stored docs are never mutated, so sharing them is safe. */
  match(
    filter: Doc = {},
    opts: { sort?: Doc; skip?: number; limit?: number; projection?: Doc; collation?: any } = {},
  ): Doc[] {
    const source = opts.collation ? this.docs.values() : this.candidates(filter);
    let cursor = mingoFind(source, filter, opts.projection, opts.collation);
    if (opts.sort && Object.keys(opts.sort).length) cursor = cursor.sort(opts.sort);
    if (opts.skip) cursor = cursor.skip(opts.skip);
    if (opts.limit) cursor = cursor.limit(Math.abs(opts.limit)); // lazy: stops scanning at the limit
    return cursor.all() as Doc[];
  }

  /**
   * The documents worth testing against filter: the one found through _id or a unique index when
   * the filter pins every field of it to a plain value, otherwise all. Keeps keyed upserts and
   * updates on big collections from scanning everything.
   */
  private candidates(filter: Doc): Iterable<Doc> {
    const plain = (v: unknown) => v != null && !isOperatorDoc(v) && !Array.isArray(v) && !(v instanceof RegExp);
    for (const ix of this.indexes) {
      const fields = Object.keys(ix.key);
      if (ix.name !== '_id_' && (!this.unique.has(ix.name) || this.multikey.has(ix.name) || ix.partialFilterExpression))
        continue;
      if (!fields.every((f) => plain(filter[f]))) continue;
      const id =
        ix.name === '_id_' ? keyOf(filter._id) : this.unique.get(ix.name)!.get(keyOf(fields.map((f) => filter[f])));
      const doc = id === undefined ? undefined : this.docs.get(id);
      return doc ? [doc] : [];
    }
    return this.docs.values();
  }
}

/**
 * The document `u` makes of `doc` (a copy: stored documents are replaced, never changed).
 * On the insert path of an upsert, $setOnInsert (which mingo lacks) is applied as a $set.
 */
function applyUpdate(doc: Doc, u: Doc | Doc[], q: Doc, arrayFilters: Doc[] | undefined, inserting: boolean): Doc {
  let out: Doc;
  if (!Array.isArray(u) && !isOperatorDoc(u)) {
    out = clone(u); // a replacement document: keeps the old _id
    out._id ??= doc._id;
  } else {
    let modifier: Doc | Doc[] = u;
    if (!Array.isArray(u)) {
      const { $setOnInsert, ...rest } = u;
      modifier = inserting && $setOnInsert ? { ...rest, $set: { ...rest.$set, ...$setOnInsert } } : rest;
    }
    const docs = [clone(doc)];
    if (Array.isArray(modifier)) pipelineUpdate(docs, {}, modifier as any, { cloneMode: 'deep' });
    else {
      // mingo/updater brings only the operators updates need, where the root export copies all of
      // mingo's operator tables on every call (10x slower). The query matters only for `$` paths.
      const positional = Object.values(modifier).some((fields) =>
        Object.keys(fields ?? {}).some((f) => /\.\$(\.|$)/.test(f)),
      );
      operatorUpdate(docs, positional && !inserting ? q : {}, modifier, { arrayFilters, cloneMode: 'deep' });
    }
    out = docs[0];
  }
  if (doc._id !== undefined && keyOf(out._id) !== keyOf(doc._id)) {
    throw new CommandError(
      66,
      'ImmutableField',
      "Performing an update on the path '_id' would modify the immutable field '_id'",
    );
  }
  const { _id, ...rest } = out;
  return { _id: _id ?? new ObjectId(), ...rest }; // the server puts _id first
}

/** The document an upsert starts from: the equality conditions of its query. */
function seedFromQuery(q: Doc, seed: Doc = {}): Doc {
  for (const [k, v] of Object.entries(q)) {
    if (k === '$and' && Array.isArray(v)) v.forEach((sub) => seedFromQuery(sub, seed));
    else if (k.startsWith('$') || v instanceof RegExp) continue;
    else if (isOperatorDoc(v)) {
      if ('$eq' in v) setPath(seed, k, v.$eq);
    } else setPath(seed, k, v);
  }
  return seed;
}

type Handler = (db: string, cmd: Doc, connectionId: number) => Doc;

export class MongoTestServer {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  private readonly dbs = new Map<string, Map<string, Collection>>();
  private readonly cursors = new Map<number, { ns: string; docs: Doc[] }>();
  private nextCursorId = 1;
  private nextConnectionId = 1;
  private nextRequestId = 1;

  private constructor(
    public port: number,
    readonly host: string,
    readonly version: MongoVersion,
  ) {}

  /** `version` picks the rules for field names (see the top of this file). @defaultValue '7.0' */
  static async start(opts: { port?: number; host?: string; version?: MongoVersion } = {}): Promise<MongoTestServer> {
    const server = new MongoTestServer(opts.port ?? 0, opts.host ?? '127.0.0.1', opts.version ?? '7.0');
    await server.start();
    return server;
  }

  url(db: string): string {
    return `mongodb://${this.host}:${this.port}/${db}?directConnection=true`;
  }

  /** Listens (again) on the same port; the first start picks a free one when port is 0. */
  async start(): Promise<void> {
    if (this.server) return;
    const server = createServer((socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port: this.port, host: this.host }, () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  /** An outage: closes the listener and destroys every open socket, keeping the data. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async close(): Promise<void> {
    await this.stop();
    this.cursors.clear();
  }

  /** A copy of the stored documents, for tests that inspect what was written. */
  collection(db: string, name: string): Record<string, unknown>[] {
    return [...(this.dbs.get(db)?.get(name)?.docs.values() ?? [])].map(clone);
  }

  // ---- wire protocol ----

  private accept(socket: Socket): void {
    const connectionId = this.nextConnectionId++;
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      while (pending.length >= 4 && pending.length >= pending.readInt32LE(0)) {
        const message = pending.subarray(0, pending.readInt32LE(0));
        pending = pending.subarray(message.length);
        try {
          if (message.length < 21) throw new Error('message too short');
          const reply = this.handleMessage(message, connectionId);
          if (reply) socket.write(reply);
        } catch {
          socket.destroy(); // a message we cannot parse: drop the connection like a real server would
          return;
        }
      }
    });
  }

  private handleMessage(message: Buffer, connectionId: number): Buffer | undefined {
    const requestId = message.readInt32LE(4);
    const opCode = message.readInt32LE(12);
    if (opCode === OP_QUERY) {
      // Only the driver's first handshake (legacy `ismaster` on admin.$cmd) comes this way.
      const nsEnd = message.indexOf(0, 20);
      const ns = message.toString('utf8', 20, nsEnd);
      const at = nsEnd + 1 + 8; // skip numberToSkip, numberToReturn
      let cmd = BSON.deserialize(message.subarray(at, at + message.readInt32LE(at)));
      if (cmd.$query) cmd = cmd.$query;
      const prefix = Buffer.alloc(20); // responseFlags, cursorID, startingFrom: 0; numberReturned: 1
      prefix.writeInt32LE(1, 16);
      return this.frame(OP_REPLY, requestId, prefix, this.runCommand(ns.split('.')[0], cmd, connectionId));
    }
    if (opCode !== OP_MSG) throw new Error(`unsupported opCode ${opCode}`);
    const flags = message.readUInt32LE(16);
    const end = message.length - (flags & 1 ? 4 : 0); // checksumPresent: ignore the CRC
    let cmd: Doc = {};
    const sequences: Doc = {};
    let tooLarge: number | undefined;
    for (let at = 20; at < end;) {
      const kind = message[at++];
      const size = message.readInt32LE(at);
      if (kind === 0) {
        if (size > MAX_MESSAGE_DOCUMENT_BYTES) tooLarge ??= size;
        cmd = BSON.deserialize(message.subarray(at, at + size));
      } else {
        // kind 1: a document sequence (insert's documents, update's updates, ...) to merge into the command
        const idEnd = message.indexOf(0, at + 4);
        const docs: Doc[] = [];
        for (let p = idEnd + 1; p < at + size; p += message.readInt32LE(p)) {
          const docSize = message.readInt32LE(p);
          if (docSize > MAX_MESSAGE_DOCUMENT_BYTES) tooLarge ??= docSize;
          docs.push(BSON.deserialize(message.subarray(p, p + docSize)));
        }
        sequences[message.toString('utf8', at + 4, idEnd)] = docs;
      }
      at += size;
    }
    // The server refuses the whole message when one of its documents is over the limit.
    const reply = tooLarge
      ? {
          ok: 0,
          code: 10334,
          codeName: 'BSONObjectTooLarge',
          errmsg:
            `BSONObj size: ${tooLarge} (0x${tooLarge.toString(16).toUpperCase()}) is invalid. ` +
            `Size must be between 0 and ${MAX_MESSAGE_DOCUMENT_BYTES}(16MB)`,
        }
      : this.runCommand(cmd.$db ?? 'admin', { ...cmd, ...sequences }, connectionId);
    if (flags & 2) return undefined; // moreToCome: an unacknowledged write, no reply wanted
    return this.frame(OP_MSG, requestId, Buffer.alloc(5), reply); // flagBits 0, then one section of kind 0
  }

  /** A reply: the standard header (responseTo = the request's id), the opcode's fields, one document. */
  private frame(opCode: number, responseTo: number, prefix: Buffer, doc: Doc): Buffer {
    const body = BSON.serialize(doc);
    const head = Buffer.alloc(16);
    head.writeInt32LE(16 + prefix.length + body.length, 0);
    head.writeInt32LE(this.nextRequestId++, 4);
    head.writeInt32LE(responseTo, 8);
    head.writeInt32LE(opCode, 12);
    return Buffer.concat([head, prefix, body]);
  }

  private runCommand(db: string, cmd: Doc, connectionId: number): Doc {
    const name = Object.keys(cmd)[0] ?? '';
    const handler = this.commands[name] ?? this.commands[name.toLowerCase()];
    try {
      if (!handler) throw new CommandError(59, 'CommandNotFound', `no such command: '${name}'`);
      return { ...handler(db, cmd, connectionId), ok: 1 };
    } catch (caught) {
      const err = asCommandError(caught);
      return { ok: 0, errmsg: err.message, code: err.code, codeName: err.codeName, ...err.extra };
    }
  }

  // ---- storage helpers ----

  private coll(db: string, name: string, create = true): Collection | undefined {
    let colls = this.dbs.get(db);
    if (!colls && create) this.dbs.set(db, (colls = new Map()));
    let coll = colls?.get(name);
    if (!coll && create) colls!.set(name, (coll = new Collection(`${db}.${name}`)));
    return coll;
  }

  /** A cursor reply: the first batch now, the rest kept for getMore (real servers send 101 docs first). */
  private cursorReply(ns: string, docs: Doc[], batchSize?: number, singleBatch = false): Doc {
    const firstBatch = this.takeBatch(docs, batchSize || 101);
    let id = 0;
    if (docs.length && !singleBatch) this.cursors.set((id = this.nextCursorId++), { ns, docs });
    return { cursor: { firstBatch, id: Long.fromNumber(id), ns } };
  }

  /** Removes and returns the next batch: up to count documents and MAX_BATCH_BYTES (at least one). */
  private takeBatch(docs: Doc[], count = Infinity): Doc[] {
    let n = 0;
    for (let bytes = 0; n < docs.length && n < count; n++) {
      bytes += BSON.calculateObjectSize(docs[n]);
      if (bytes > MAX_BATCH_BYTES && n > 0) break;
    }
    return docs.splice(0, n);
  }

  /** One update statement (update command or findAndModify); returns what happened. */
  private updateOne(
    coll: Collection,
    st: Doc,
  ): { matched: number; modified: number; upserted?: Doc; before?: Doc; after?: Doc } {
    const targets = coll.match(st.q, { sort: st.sort, collation: st.collation, limit: st.multi ? 0 : 1 });
    const legacy = this.version === '4.4';
    if (!targets.length && st.upsert) {
      const doc = applyUpdate(seedFromQuery(st.q ?? {}), st.u, st.q ?? {}, st.arrayFilters, true);
      // An upsert that inserts is checked as an insert for field names (since 5.0).
      const dollar = legacy ? dollarField(doc, true) : undefined;
      if (dollar) throw dollarNotStorable(dollar);
      assertStorable(doc, 'upsert');
      coll.put(doc);
      return { matched: 0, modified: 0, upserted: doc, after: doc };
    }
    if (targets.length && !Array.isArray(st.u)) {
      // Changing a document: no `$`-prefixed name at its top level, whether replaced or set by path.
      const tops = isOperatorDoc(st.u)
        ? Object.values(st.u as Doc).flatMap((fields) => Object.keys(fields ?? {}).map((path) => path.split('.')[0]!))
        : Object.keys(st.u);
      const top = tops.find((f) => f.startsWith('$') && !DBREF_FIELDS.has(f));
      if (top) throw (legacy ? dollarNotStorable : dollarInUpdate)({ name: top, path: top });
    }
    let modified = 0;
    let after: Doc | undefined;
    for (const doc of targets) {
      after = applyUpdate(doc, st.u, st.q ?? {}, st.arrayFilters, false);
      const dollar = legacy ? dollarField(after, true) : undefined;
      if (dollar) throw dollarNotStorable(dollar);
      assertStorable(after, 'update');
      // Like the server: no-op updates are not modifications.
      if (Buffer.compare(BSON.serialize(after), BSON.serialize(doc)) === 0) continue;
      coll.put(after, doc);
      modified++;
    }
    return { matched: targets.length, modified, before: targets[0], after };
  }

  /** Runs write statements like the server: each failure becomes a writeError; ordered stops at the first. */
  private writeBatch(cmd: Doc, statements: Doc[], run: (st: Doc, index: number) => void): Doc {
    const writeErrors: Doc[] = [];
    for (const [index, st] of statements.entries()) {
      try {
        run(st, index);
      } catch (caught) {
        const err = asCommandError(caught); // like the server, a statement it rejects is a write error too
        writeErrors.push({ index, code: err.code, errmsg: err.message, ...err.extra });
        if (cmd.ordered !== false) break;
      }
    }
    return writeErrors.length ? { writeErrors } : {};
  }

  private project(doc: Doc | undefined, fields?: Doc): Doc | null {
    if (!doc) return null;
    return fields && Object.keys(fields).length ? (mingoFind([doc], {}, fields).all()[0] as Doc) : doc;
  }

  // ---- commands ----

  private readonly commands: Record<string, Handler> = {
    hello: (_db, _cmd, connectionId) => ({
      // No topologyVersion: the driver then polls with plain hellos instead of streaming
      // (awaitable hello), which keeps reconnection after stop()/start() simple.
      helloOk: true,
      isWritablePrimary: true,
      ismaster: true,
      maxBsonObjectSize: 16 * 1024 * 1024,
      maxMessageSizeBytes: 48_000_000,
      maxWriteBatchSize: 100_000,
      localTime: new Date(),
      logicalSessionTimeoutMinutes: 30,
      connectionId,
      minWireVersion: 0,
      maxWireVersion: this.version === '4.4' ? 9 : 21, // MongoDB 7.0 (or 4.4); the driver refuses anything below 9
      readOnly: false,
    }),
    // Also isMaster: command names are tried lower-cased.
    ismaster: (db, cmd, connectionId) => this.commands.hello(db, cmd, connectionId),
    ping: () => ({}),
    buildinfo: () => ({
      version: `${this.version}.0`,
      versionArray: [...this.version.split('.').map(Number), 0, 0],
      bits: 64,
      maxBsonObjectSize: MAX_DOCUMENT_BYTES,
    }),
    endSessions: () => ({}),
    listDatabases: () => ({
      databases: [...this.dbs.keys()].map((name) => ({ name, sizeOnDisk: 0, empty: false })),
      totalSize: 0,
    }),
    create: (db, cmd) => {
      if (this.coll(db, cmd.create, false))
        throw new CommandError(48, 'NamespaceExists', `Collection ${db}.${cmd.create} already exists.`);
      this.coll(db, cmd.create);
      return {};
    },
    drop: (db, cmd) => {
      const nIndexesWas = this.coll(db, cmd.drop, false)?.indexes.length ?? 0;
      this.dbs.get(db)?.delete(cmd.drop);
      return { ns: `${db}.${cmd.drop}`, nIndexesWas };
    },
    dropDatabase: (db) => {
      this.dbs.delete(db);
      return { dropped: db };
    },
    listCollections: (db, cmd) => {
      const infos = [...(this.dbs.get(db)?.keys() ?? [])].map((name) =>
        cmd.nameOnly
          ? { name, type: 'collection' }
          : {
              name,
              type: 'collection',
              options: {},
              info: { readOnly: false },
              idIndex: { v: 2, key: { _id: 1 }, name: '_id_' },
            },
      );
      return this.cursorReply(
        `${db}.$cmd.listCollections`,
        mingoFind(infos, cmd.filter).all() as Doc[],
        cmd.cursor?.batchSize,
      );
    },
    createIndexes: (db, cmd) => {
      const createdCollectionAutomatically = !this.coll(db, cmd.createIndexes, false);
      const coll = this.coll(db, cmd.createIndexes)!;
      const numIndexesBefore = coll.indexes.length;
      for (const spec of cmd.indexes as IndexSpec[]) {
        const same = coll.indexes.find((ix) => ix.name === spec.name || keyOf(ix.key) === keyOf(spec.key));
        if (same && keyOf(same.key) !== keyOf(spec.key))
          throw new CommandError(
            86,
            'IndexKeySpecsConflict',
            `An existing index has the same name as the requested index but a different key: ${same.name}`,
          );
        if (same && same.name !== spec.name)
          throw new CommandError(
            85,
            'IndexOptionsConflict',
            `Index already exists with a different name: ${same.name}`,
          );
        if (!same) coll.addIndex(Object.assign({ v: 2 }, spec));
      }
      return { createdCollectionAutomatically, numIndexesBefore, numIndexesAfter: coll.indexes.length };
    },
    listIndexes: (db, cmd) => {
      const coll = this.coll(db, cmd.listIndexes, false);
      if (!coll) throw new CommandError(26, 'NamespaceNotFound', `ns does not exist: ${db}.${cmd.listIndexes}`);
      return this.cursorReply(
        coll.ns,
        coll.indexes.map((ix) => ({ ...ix })),
        cmd.cursor?.batchSize,
      );
    },
    dropIndexes: (db, cmd) => {
      const coll = this.coll(db, cmd.dropIndexes, false);
      if (!coll) throw new CommandError(26, 'NamespaceNotFound', `ns not found ${db}.${cmd.dropIndexes}`);
      const nIndexesWas = coll.indexes.length;
      const wanted = [cmd.index].flat();
      for (const ix of coll.indexes.slice(1)) {
        if (wanted.some((w) => w === '*' || w === ix.name || (typeof w === 'object' && keyOf(w) === keyOf(ix.key))))
          coll.dropIndex(ix.name);
      }
      return { nIndexesWas };
    },
    insert: (db, cmd) => {
      const coll = this.coll(db, cmd.insert)!;
      let n = 0;
      const result = this.writeBatch(cmd, cmd.documents ?? [], (doc) => {
        const { _id, ...rest } = doc;
        const dollar = this.version === '4.4' ? dollarField(rest, false) : undefined;
        if (dollar) throw new CommandError(2, 'BadValue', `Document can't have $ prefixed field names: ${dollar.name}`);
        assertStorable(doc, 'insert');
        coll.put({ _id: _id ?? new ObjectId(), ...rest });
        n++;
      });
      return { n, ...result };
    },
    update: (db, cmd) => {
      const coll = this.coll(db, cmd.update)!;
      let n = 0;
      let nModified = 0;
      const upserted: Doc[] = [];
      const result = this.writeBatch(cmd, cmd.updates ?? [], (st, index) => {
        const r = this.updateOne(coll, st);
        n += r.matched + (r.upserted ? 1 : 0);
        nModified += r.modified;
        if (r.upserted) upserted.push({ index, _id: r.upserted._id });
      });
      return { n, nModified, ...(upserted.length ? { upserted } : {}), ...result };
    },
    delete: (db, cmd) => {
      const coll = this.coll(db, cmd.delete, false);
      let n = 0;
      const result = this.writeBatch(cmd, cmd.deletes ?? [], (st) => {
        for (const doc of coll?.match(st.q, { limit: st.limit, collation: st.collation }) ?? []) {
          coll!.remove(doc);
          n++;
        }
      });
      return { n, ...result };
    },
    findAndModify: (db, cmd) => {
      const coll = this.coll(db, cmd.findAndModify)!;
      if (cmd.remove) {
        const doc = coll.match(cmd.query, { sort: cmd.sort, collation: cmd.collation, limit: 1 })[0];
        if (doc) coll.remove(doc);
        return { lastErrorObject: { n: doc ? 1 : 0 }, value: this.project(doc, cmd.fields) };
      }
      const st = {
        q: cmd.query ?? {},
        u: cmd.update,
        upsert: cmd.upsert,
        sort: cmd.sort,
        arrayFilters: cmd.arrayFilters,
        collation: cmd.collation,
      };
      const r = this.updateOne(coll, st);
      const lastErrorObject: Doc = { n: r.matched || (r.upserted ? 1 : 0), updatedExisting: r.matched > 0 };
      if (r.upserted) lastErrorObject.upserted = r.upserted._id;
      const value = cmd.new ? (r.after ?? r.before) : r.before;
      return { lastErrorObject, value: this.project(value, cmd.fields) };
    },
    find: (db, cmd) => {
      // cmd has sort, skip, limit, projection and collation.
      const docs = this.coll(db, cmd.find, false)?.match(cmd.filter, cmd) ?? [];
      return this.cursorReply(`${db}.${cmd.find}`, docs, cmd.batchSize, cmd.singleBatch || cmd.limit < 0);
    },
    aggregate: (db, cmd) => {
      const source =
        typeof cmd.aggregate === 'string' ? [...(this.coll(db, cmd.aggregate, false)?.docs.values() ?? [])] : [];
      const results = new Aggregator(cmd.pipeline ?? [], {
        collation: cmd.collation,
        processingMode: ProcessingMode.CLONE_INPUT, // stages like $set must not touch stored documents
        collectionResolver: (name) => [...(this.coll(db, name, false)?.docs.values() ?? [])], // for $lookup
      }).run(source);
      return this.cursorReply(`${db}.${cmd.aggregate}`, results as Doc[], cmd.cursor?.batchSize);
    },
    getMore: (db, cmd) => {
      const id = Number(cmd.getMore);
      const cursor = this.cursors.get(id);
      if (!cursor) throw new CommandError(43, 'CursorNotFound', `cursor id ${id} not found`);
      const nextBatch = this.takeBatch(cursor.docs, cmd.batchSize || Infinity);
      if (!cursor.docs.length) this.cursors.delete(id);
      return { cursor: { nextBatch, id: Long.fromNumber(cursor.docs.length ? id : 0), ns: cursor.ns } };
    },
    killCursors: (_db, cmd) => {
      const ids = (cmd.cursors as unknown[]).map(Number);
      const killed = ids.filter((id) => this.cursors.delete(id));
      return {
        cursorsKilled: killed.map((id) => Long.fromNumber(id)),
        cursorsNotFound: ids.filter((id) => !killed.includes(id)).map((id) => Long.fromNumber(id)),
        cursorsAlive: [],
        cursorsUnknown: [],
      };
    },
    count: (db, cmd) => {
      return {
        n:
          this.coll(db, cmd.count, false)?.match(cmd.query, {
            skip: cmd.skip,
            limit: cmd.limit,
            collation: cmd.collation,
          }).length ?? 0,
      };
    },
    distinct: (db, cmd) => {
      const values = new Map<string, unknown>();
      for (const doc of this.coll(db, cmd.distinct, false)?.match(cmd.query, { collation: cmd.collation }) ?? []) {
        const v = getPath(doc, cmd.key);
        for (const item of Array.isArray(v) ? v : [v]) if (item !== undefined) values.set(keyOf(item), item);
      }
      return { values: [...values.values()] };
    },
  };
}

// Run as its own process: node --import tsx test/support/mongo-test-server.ts --port N
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : undefined;
  };
  void MongoTestServer.start({ port: Number(arg('--port') ?? 0), host: arg('--host') }).then((server) => {
    process.stdout.write(`listening ${server.port}\n`);
    for (const signal of ['SIGINT', 'SIGTERM'] as const)
      process.once(signal, () => void server.close().then(() => process.exit(0)));
  });
}
