// Entry point of a forked worker process (see worker-pool.ts).
import { runWorkerProcess } from './worker-process.ts';

await runWorkerProcess();
