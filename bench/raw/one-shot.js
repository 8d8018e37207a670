// Raw BullMQ side of the bench's one-shot rows, plain JavaScript as a BullMQ script would be:
// `node bench/raw/one-shot.js <redisUrl> <prefix> <queue> add|status` adds one job, or prints
// the job counts per state, then closes its connection and exits.
import process from 'node:process';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';

const [redisUrl, prefix, name, what] = process.argv.slice(2);
const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
const queue = new Queue(name, { connection, prefix });
if (what === 'add') {
  const job = await queue.add('noop', { n: 1 });
  process.stdout.write(`${job.id}\n`);
} else {
  process.stdout.write(`${JSON.stringify(await queue.getJobCounts())}\n`);
}
await queue.close();
await connection.quit();
