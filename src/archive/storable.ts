import mongoose from 'mongoose';
import type { TaskDocument } from './document.ts';

/**
 * MongoDB's largest document is 16 MiB of BSON; the driver refuses a whole bulk write holding
 * one over it (the update statement around the document counts too), so documents are kept
 * this much under it.
 */
export const MAX_DOCUMENT_BYTES = 16 * 1024 * 1024 - 64 * 1024;
/**
 * MongoDB stores documents nested at most 180 levels deep (a top-level field is level 1), and
 * refuses a whole write whose statement nests more than 200.
 */
export const MAX_DEPTH = 180;

/** What stands in a document for a field MongoDB could not store as it was. */
export interface Truncated {
  truncated: true;
  /** Size of the field's JSON, in bytes. */
  bytes: number;
  reason: string;
}

/** The task's own data in a document, in the order they are given up when one is too big. */
const FIELDS = ['result', 'params', 'error', 'dependencies'] as const;
type Field = (typeof FIELDS)[number];

const bsonSize = (doc: TaskDocument) =>
  mongoose.mongo.BSON.calculateObjectSize(doc as unknown as Record<string, unknown>);
const jsonBytes = (v: unknown) => Buffer.byteLength(JSON.stringify(v) ?? '');
const isContainer = (v: unknown): v is object =>
  Array.isArray(v) || (!!v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype);

/** How deep `v` nests, when it is a field of a document (level 1), counting no further than MAX_DEPTH + 1. */
function depth(v: unknown, level = 1): number {
  if (!isContainer(v)) return level;
  let deepest = level;
  for (const child of Object.values(v)) {
    deepest = Math.max(deepest, depth(child, level + 1));
    if (deepest > MAX_DEPTH) break;
  }
  return deepest;
}

/** Replaces `field` of `doc` by a Truncated (an error keeps the start of its message). */
function reduceField(doc: TaskDocument, field: Field, reason: string): void {
  const value = doc[field];
  if (value === undefined) return;
  const stub: Truncated = { truncated: true, bytes: jsonBytes(value), reason };
  const fields = doc as unknown as Record<Field, unknown>;
  fields[field] = field === 'error' ? { message: doc.error!.message.slice(0, 1000), ...stub } : stub;
  doc.reduced = { reason, fields: [...(doc.reduced?.fields ?? []), field] };
}

/**
 * `doc`, or a copy reduced so that MongoDB can store it: a field nested deeper than MongoDB
 * allows, then the largest fields while the document is over the size limit, are replaced by
 * a Truncated. Identity, status and dates are kept, so history and late dependencies still
 * find the task.
 */
export function fitForStorage(doc: TaskDocument): TaskDocument {
  const deep = FIELDS.filter((f) => doc[f] !== undefined && depth(doc[f]) > MAX_DEPTH);
  let size = bsonSize(doc);
  if (!deep.length && size <= MAX_DOCUMENT_BYTES) return doc;
  const out = { ...doc };
  for (const f of deep) reduceField(out, f, `nested deeper than the ${MAX_DEPTH} levels MongoDB stores`);
  size = bsonSize(out);
  const original = size;
  while (size > MAX_DOCUMENT_BYTES) {
    const left = FIELDS.filter((f) => out[f] !== undefined && !(out.reduced?.fields ?? []).includes(f));
    if (!left.length) break;
    const largest = left.map((f) => ({ f, bytes: jsonBytes(out[f]) })).sort((a, b) => b.bytes - a.bytes)[0]!;
    reduceField(out, largest.f, `document of ${original} bytes is over MongoDB's limit of 16 MiB`);
    size = bsonSize(out);
  }
  return out;
}

/**
 * A copy of `doc` for MongoDB to store after it refused the document: every field of the
 * task's own data (params, result, error, dependencies) replaced by a Truncated naming why.
 */
export function reduceRefused(doc: TaskDocument, why: string): TaskDocument {
  const out = { ...doc };
  const reason = `MongoDB refused the document: ${why}`;
  for (const f of FIELDS) if (!(out.reduced?.fields ?? []).includes(f)) reduceField(out, f, reason);
  return out;
}
