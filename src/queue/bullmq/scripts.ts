// BullMQ's compiled Lua scripts, which Taskmaster runs inside scripts of its own (see
// src/queue/scripts.ts). Not part of BullMQ's public API: the file names carry the key count,
// and versions.ts checks that the installed BullMQ is the one these were read from.
import { addDelayedJob } from 'bullmq/dist/esm/scripts/addDelayedJob-6.js';
import { addParentJob } from 'bullmq/dist/esm/scripts/addParentJob-6.js';
import { addPrioritizedJob } from 'bullmq/dist/esm/scripts/addPrioritizedJob-9.js';
import { addStandardJob } from 'bullmq/dist/esm/scripts/addStandardJob-9.js';
import { moveToFinished } from 'bullmq/dist/esm/scripts/moveToFinished-14.js';
import { promote } from 'bullmq/dist/esm/scripts/promote-9.js';
import { releaseParentIfNoPendingDependencies } from 'bullmq/dist/esm/scripts/releaseParentIfNoPendingDependencies-2.js';
import { removeJob } from 'bullmq/dist/esm/scripts/removeJob-2.js';

/** One of BullMQ's scripts: its name (without the version BullMQ appends), its Lua, its key count. */
export interface BullmqScript {
  name: string;
  content: string;
  keys: number;
}

export {
  addDelayedJob,
  addParentJob,
  addPrioritizedJob,
  addStandardJob,
  moveToFinished,
  promote,
  releaseParentIfNoPendingDependencies,
  removeJob,
};
