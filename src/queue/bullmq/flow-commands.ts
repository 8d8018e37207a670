import { FlowProducer, Job, QueueKeys, type FlowJob, type FlowJobEntry, type Queue } from 'bullmq';
import {
  addDelayedJob,
  addParentJob,
  addPrioritizedJob,
  addStandardJob,
  releaseParentIfNoPendingDependencies,
  type BullmqScript,
} from './scripts.ts';

type Arg = string | Buffer | number;

/** The BullMQ scripts a flow of tasks is written with; a Command names one by its place here. */
export const FLOW_SCRIPTS: readonly BullmqScript[] = [
  addPrioritizedJob,
  addParentJob,
  addDelayedJob,
  addStandardJob,
  releaseParentIfNoPendingDependencies,
];
/** FLOW_SCRIPTS place of the parent release, the one script that adds no job. */
export const RELEASE_SCRIPT = FLOW_SCRIPTS.indexOf(releaseParentIfNoPendingDependencies);

/** One script BullMQ would run to write a flow: its FLOW_SCRIPTS place and its keys and arguments. */
export interface FlowCommand {
  script: number;
  args: Arg[];
}

/**
 * Turns flows into the BullMQ commands FlowProducer would queue in its MULTI, by handing
 * BullMQ's own code (the backend's addJobToTransaction and execCommand) a transaction stand-in
 * that records them instead of sending them.
 */
export class FlowCommands extends FlowProducer {
  /**
   * `queue` gives the Queue object of a queue name (a flow of one is written through it);
   * `arrange` puts the entries in the order their jobs are to be written.
   */
  async commands(
    flows: FlowJob[],
    queue: (name: string) => Queue,
    arrange: (entries: FlowJobEntry[]) => void,
  ): Promise<FlowCommand[]> {
    const entries: FlowJobEntry[] = [];
    for (const flow of flows) {
      // A flow of one is most of what is added: its entry made directly spares FlowProducer's
      // per-node queue objects. The flows' order is kept (it is the FIFO order of the batch).
      if (flow.children?.length) await this.addNodes(entries, [flow]);
      else
        entries.push(new Job(queue(flow.queueName), flow.name, flow.data, flow.opts, flow.opts?.jobId).toFlowEntry({}));
    }
    arrange(entries);
    const commands: FlowCommand[] = [];
    const recorder = {
      runCommand(name: string, args: Arg[]) {
        const script = FLOW_SCRIPTS.findIndex((s) => name.startsWith(`${s.name}:`));
        if (script < 0) throw new Error(`BullMQ would write this batch with ${name}, which Taskmaster does not embed`);
        commands.push({ script, args });
        return Promise.resolve(1);
      },
    } as never;
    // As RedisQueueBackend.addFlow does: parents are released once the whole tree is written.
    const parents = new Map<string, Arg[]>();
    const queueKeys = new Map<string, ReturnType<QueueKeys['getKeys']>>();
    const writes = entries.map((entry) => {
      const parentKey = entry.parentKeyOpts.parentKey;
      const parent = entry.jobData.parent;
      if (parent && parentKey)
        parents.set(parentKey, [parentKey, `${parentKey}:dependencies`, parent.queueKey ?? '', parent.id ?? '']);
      const queueKey = `${entry.prefix}:${entry.queueName}`;
      let keys = queueKeys.get(queueKey);
      if (!keys) queueKeys.set(queueKey, (keys = new QueueKeys(entry.prefix).getKeys(entry.queueName)));
      return this.backend.addJobToTransaction(
        recorder,
        entry.jobData,
        entry.jobId,
        { ...entry.parentKeyOpts, deferParentRelease: true },
        keys,
      );
    });
    await Promise.all(writes);
    const now = Date.now();
    for (const args of parents.values())
      this.backend.execCommand(recorder, releaseParentIfNoPendingDependencies.name, [...args, now]);
    return commands;
  }
}
