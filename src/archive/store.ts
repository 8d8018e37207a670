import mongoose, { type Connection, type Model, type mongo } from 'mongoose';
import type { Logger } from 'pino';
import type { ArchivedStatus, TaskDocument } from './document.ts';

/** A search of the archive. */
export interface ArchiveQuery {
  queue: string;
  module?: string;
  statuses?: ArchivedStatus[];
  since?: Date;
  until?: Date;
  limit: number;
  /** Case-insensitive text in the params (as JSON); matched as the documents are read. */
  text?: string;
  /** Case-insensitive text in the error's message or stack. */
  error?: string;
}

/** Tasks of one status that finished in one minute (`minute`: ms at its start). */
export interface MinuteCount {
  minute: number;
  status: string;
  n: number;
}

/** Documents read at most for one search by params text (newest first). */
export const TEXT_SCAN_MAX = 100_000;

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

const schema = new mongoose.Schema<TaskDocument>(
  {
    _id: { type: String, required: true },
    jobId: { type: String, required: true },
    queue: { type: String, required: true },
    module: { type: String, required: true },
    params: { type: mongoose.Schema.Types.Mixed, default: [] },
    priority: Number,
    timeout: Number,
    dependencies: { type: mongoose.Schema.Types.Mixed, default: [] },
    taskKey: String,
    dependencyKey: String,
    status: { type: String, enum: ['completed', 'failed', 'cancelled'], required: true },
    result: mongoose.Schema.Types.Mixed,
    error: mongoose.Schema.Types.Mixed,
    attempts: Number,
    starts: Number,
    created: Date,
    started: Date,
    finished: { type: Date, required: true },
    duration: Number,
    ranBy: String,
    retriedAs: [String],
    reduced: mongoose.Schema.Types.Mixed,
    archivedAt: Date,
  },
  // Documents are written whole by the archiver: no version key, no casting surprises on read.
  { collection: 'tasks', versionKey: false, strict: false, minimize: false, bufferCommands: false, autoIndex: false },
);
// The history queries: by module, by status, by time, in a queue; and late dependencies by identity.
schema.index({ queue: 1, finished: -1 });
schema.index({ queue: 1, module: 1, finished: -1 });
schema.index({ queue: 1, status: 1, finished: -1 });
schema.index({ jobId: 1 });
schema.index({ dependencyKey: 1, status: 1 });

/** A document MongoDB (or its driver) refused: its place in the batch written, and why. */
export interface Refusal {
  index: number;
  reason: string;
}

const { MongoBulkWriteError, MongoInvalidArgumentError, MongoServerError, BSON } = mongoose.mongo;

/**
 * Codes of a whole write refused for something one of its documents holds: too large
 * (BSONObjectTooLarge, and the update and upsert forms), too deep (Overflow), or bytes the
 * server cannot read (InvalidBSON). Written one by one, the culprit is found.
 */
const DOCUMENT_CODES = new Set([10334, 17419, 17420, 15, 22]);
/**
 * Codes of a write error that says nothing of its document (a primary stepping down, a
 * shutdown, a conflict, a time limit): the batch is tried again later.
 */
const TRANSIENT_CODES = new Set([6, 7, 50, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436]);

/** Why MongoDB refused, as its reply says it, with the code. */
function describe(err: { errmsg?: string; message?: string; code?: unknown }): string {
  return `${err.errmsg ?? err.message ?? String(err)}${err.code !== undefined ? ` (code ${String(err.code)})` : ''}`;
}

/** The documents a bulk write's write errors name; undefined when the error is not about them alone. */
function refusalsOf(err: unknown): Refusal[] | undefined {
  if (!(err instanceof MongoBulkWriteError) || err.result?.getWriteConcernError()) return undefined;
  const errors = [err.writeErrors].flat();
  if (!errors.length || errors.some((e) => TRANSIENT_CODES.has(e.code))) return undefined;
  return errors.map((e) => ({ index: e.index, reason: describe(e) }));
}

/** Whether a write was refused as a whole for what one of its documents holds. */
function refusesDocuments(err: unknown): boolean {
  // The driver's own size check ("Document is larger than the maximum size …"), or a value BSON cannot hold.
  if (err instanceof MongoInvalidArgumentError) return /larger than the maximum size/.test(err.message);
  if (err instanceof BSON.BSONError) return true;
  return err instanceof MongoServerError && DOCUMENT_CODES.has(Number(err.code));
}

/** Fields that are set from the job each time it is archived (retriedAs is kept). */
function setFields(doc: TaskDocument): Partial<TaskDocument> {
  const { _id, retriedAs, ...rest } = doc;
  void _id;
  void retriedAs;
  return rest;
}

/**
 * The MongoDB archive (mongoose). Operations fail fast while MongoDB is away instead of being
 * buffered (the archiver retries them, and Redis keeps the jobs meanwhile); the driver
 * reconnects on its own once MongoDB is back.
 */
export class ArchiveStore {
  private readonly conn: Connection;
  readonly model: Model<TaskDocument>;
  private opening?: Promise<void>;
  private indexed = false;

  constructor(
    private readonly url: string,
    private readonly log: Logger,
    private readonly opts: { serverSelectionTimeoutMS?: number } = {},
  ) {
    this.conn = mongoose.createConnection();
    this.conn.on('error', (err) => log.warn({ err }, 'archive connection error'));
    this.model = this.conn.model<TaskDocument>('Task', schema);
  }

  /** Connects (again, after a failed first attempt) and makes sure the indexes exist. */
  async ready(): Promise<void> {
    if (this.conn.readyState !== 1) {
      this.opening ??= this.conn
        .openUri(this.url, {
          serverSelectionTimeoutMS: this.opts.serverSelectionTimeoutMS ?? 5000,
          heartbeatFrequencyMS: 2000,
          bufferCommands: false,
        })
        .then(() => undefined)
        .finally(() => (this.opening = undefined));
      await this.opening;
    }
    if (!this.indexed) {
      await this.model.createIndexes();
      this.indexed = true;
    }
  }

  /** Upserts by `_id`: archiving a job again replaces its fields, never adds a document. */
  async upsert(docs: TaskDocument[]): Promise<void> {
    const refused = await this.write(docs);
    if (refused.length) throw new Error(`MongoDB refused ${refused.length} document(s): ${refused[0]!.reason}`);
  }

  /**
   * Upserts by `_id`, each document on its own account: the ones MongoDB (or its driver)
   * refuses are returned, and the others are written. Throws only when the archive cannot be
   * written as such (MongoDB away, a primary stepping down, ...). The driver's collection is
   * used directly: mongoose's casting would skip an operation it cannot cast without saying so.
   */
  async write(docs: TaskDocument[]): Promise<Refusal[]> {
    if (!docs.length) return [];
    await this.ready();
    try {
      const ops: mongo.AnyBulkWriteOperation[] = docs.map((d) => ({
        updateOne: {
          filter: { _id: d._id as unknown as mongo.ObjectId },
          update: { $set: setFields(d), ...(d.reduced ? {} : { $unset: { reduced: '' } }) },
          upsert: true,
        },
      }));
      await this.model.collection.bulkWrite(ops, { ordered: false });
      return [];
    } catch (err) {
      const refused = refusalsOf(err);
      if (refused) return refused;
      if (!refusesDocuments(err)) throw err;
      if (docs.length === 1) return [{ index: 0, reason: describe(err as Error) }];
      // Refused as a whole (the driver measures each document first): one by one, to find which.
      const out: Refusal[] = [];
      for (const [index, doc] of docs.entries()) {
        for (const r of await this.write([doc])) out.push({ index, reason: r.reason });
      }
      return out;
    }
  }

  async get(id: string): Promise<TaskDocument | undefined> {
    await this.ready();
    return ((await this.model.findById(id).lean()) as TaskDocument | null) ?? undefined;
  }

  /** Newest first. */
  async find(q: ArchiveQuery): Promise<TaskDocument[]> {
    await this.ready();
    const filter: Record<string, unknown> = { queue: q.queue };
    if (q.module) filter.module = q.module;
    if (q.statuses) filter.status = { $in: q.statuses };
    if (q.since || q.until)
      filter.finished = { ...(q.since ? { $gte: q.since } : {}), ...(q.until ? { $lte: q.until } : {}) };
    if (q.error) {
      const match = new RegExp(escapeRegex(q.error), 'i');
      filter.$or = [{ 'error.message': match }, { 'error.stack': match }];
    }
    const sorted = this.model.find(filter).sort({ finished: -1, _id: -1 });
    if (!q.text) return (await sorted.limit(q.limit).lean()) as TaskDocument[];
    // Params are any JSON, which no MongoDB operator searches as text: the newest documents
    // are read and matched here, up to TEXT_SCAN_MAX of them.
    const text = q.text.toLowerCase();
    const out: TaskDocument[] = [];
    for await (const doc of sorted.limit(TEXT_SCAN_MAX).lean().cursor({ batchSize: 1000 })) {
      const d = doc as unknown as TaskDocument;
      if (
        JSON.stringify(d.params ?? [])
          .toLowerCase()
          .includes(text)
      )
        out.push(d);
      if (out.length >= q.limit) break;
    }
    return out;
  }

  /** Of these identities, the ones that completed (a completed run of each: its job id and finish time). */
  async completed(dependencyKeys: string[]): Promise<Map<string, { jobId: string; at: number }>> {
    const out = new Map<string, { jobId: string; at: number }>();
    if (!dependencyKeys.length) return out;
    await this.ready();
    const docs = await this.model
      .find(
        { dependencyKey: { $in: dependencyKeys }, status: 'completed' },
        { dependencyKey: 1, jobId: 1, finished: 1 },
      )
      .lean();
    for (const d of docs) out.set(d.dependencyKey, { jobId: d.jobId, at: new Date(d.finished).getTime() });
    return out;
  }

  /** Tasks of a queue that finished in [from, to), per minute (ms at the minute's start) and status. */
  async finishedPerMinute(queue: string, from: Date, to: Date): Promise<MinuteCount[]> {
    await this.ready();
    const ms = { $toLong: '$finished' };
    const rows = await this.model.aggregate<{ _id: { minute: number; status: string }; n: number }>([
      { $match: { queue, finished: { $gte: from, $lt: to } } },
      { $group: { _id: { minute: { $subtract: [ms, { $mod: [ms, 60_000] }] }, status: '$status' }, n: { $sum: 1 } } },
    ]);
    return rows.map((r) => ({ minute: Number(r._id.minute), status: r._id.status, n: r.n }));
  }

  /** Removes a task's document; whether there was one. */
  async remove(id: string): Promise<boolean> {
    await this.ready();
    return (await this.model.deleteOne({ _id: id })).deletedCount > 0;
  }

  async addRetry(id: string, newId: string): Promise<void> {
    await this.ready();
    await this.model.updateOne({ _id: id }, { $push: { retriedAs: newId } });
  }

  async close(): Promise<void> {
    // Stopping: nothing is left to write, and a connection that fails to close is gone anyway.
    await this.conn.close().catch(() => undefined);
  }
}
