import mongoose, { type Connection, type Model } from 'mongoose';
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
    if (!docs.length) return;
    await this.ready();
    await this.model.bulkWrite(
      docs.map((d) => ({ updateOne: { filter: { _id: d._id }, update: { $set: setFields(d) }, upsert: true } })),
      { ordered: false },
    );
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
    if (q.since || q.until) filter.finished = { ...(q.since ? { $gte: q.since } : {}), ...(q.until ? { $lte: q.until } : {}) };
    return (await this.model.find(filter).sort({ finished: -1, _id: -1 }).limit(q.limit).lean()) as TaskDocument[];
  }

  /** Of these identities, the ones that completed (a completed run of each: its job id and finish time). */
  async completed(dependencyKeys: string[]): Promise<Map<string, { jobId: string; at: number }>> {
    const out = new Map<string, { jobId: string; at: number }>();
    if (!dependencyKeys.length) return out;
    await this.ready();
    const docs = await this.model
      .find({ dependencyKey: { $in: dependencyKeys }, status: 'completed' }, { dependencyKey: 1, jobId: 1, finished: 1 })
      .lean();
    for (const d of docs) out.set(d.dependencyKey, { jobId: d.jobId, at: new Date(d.finished).getTime() });
    return out;
  }

  async addRetry(id: string, newId: string): Promise<void> {
    await this.ready();
    await this.model.updateOne({ _id: id }, { $push: { retriedAs: newId } });
  }

  async close(): Promise<void> {
    await this.conn.close().catch(() => undefined);
  }
}
