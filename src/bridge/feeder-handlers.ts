import type { Logger } from 'pino';
import { InvalidTaskError, type TaskProblem } from '../errors.ts';
import type { TaskClient } from '../tasks/task-client.ts';
import { legacyFromAdded, type LegacyTask } from './legacy-shape.ts';
import type { Peer, Presence } from './presence.ts';

/** The answer to one `task:add`, given to the acknowledgement callback when there is one. */
export type AddAnswer =
  | { ok: true; tasks: LegacyTask[] }
  | {
      ok: false;
      /** TASK_INVALID (nothing added: fix the batch) or ADD_FAILED (nothing added: send it again). */
      code: string;
      message: string;
      /** One entry per offending task; `index` -1 is about the batch as a whole. */
      problems: TaskProblem[];
    };

/** Events a feeder gets for an answer, in the order they are emitted. */
export type AddEvents = [event: string, payload: unknown][];

/**
 * The events that carry an answer. A stored batch is confirmed with `task:add:confirm` (the
 * stored tasks as a JSON string, as the 2016 master sent them) and `task:added` (the same tasks
 * as objects, as the 2015 feeder expected). A refused one gets `task:add:failed` with a reason
 * per offending task, and the plain message as `task:error`, the event the 2015 and 2016
 * feeders listen to for errors.
 */
export function answerEvents(answer: AddAnswer): AddEvents {
  if (answer.ok) {
    return [
      ['task:add:confirm', JSON.stringify(answer.tasks)],
      ['task:added', answer.tasks],
    ];
  }
  const { code, message, problems } = answer;
  return [
    ['task:add:failed', { code, message, problems }],
    ['task:error', message],
  ];
}

/**
 * `task:add` from feeders (and from runners, which add from inside tasks): validated and added
 * all-or-nothing by TaskClient, answered on the socket and through the acknowledgement. The
 * batches of one client are handled one after the other, so its confirmations come back in the
 * order it sent the batches.
 */
export class FeederHandlers {
  private readonly chains = new WeakMap<Peer, Promise<unknown>>();

  constructor(
    private readonly opts: {
      client: TaskClient;
      presence: Presence;
      log: Logger;
      emit(peer: Peer, event: string, payload: unknown): void;
    },
  ) {}

  /** Handles one `task:add`; resolves to the answer once it has been emitted. */
  add(peer: Peer, payload: unknown): Promise<AddAnswer> {
    const previous = this.chains.get(peer) ?? Promise.resolve();
    const next = previous.then(() => this.addNow(peer, payload));
    this.chains.set(
      peer,
      // The caller gets `next` and its failure; the chain only orders the peer's adds.
      next.catch(() => undefined),
    );
    return next;
  }

  private async addNow(peer: Peer, payload: unknown): Promise<AddAnswer> {
    const log = this.opts.log;
    let answer: AddAnswer;
    try {
      const added = await this.opts.client.add(payload);
      const tasks = added.map(legacyFromAdded);
      const fresh = added.filter((a) => !a.duplicate).length;
      peer.added += fresh;
      this.opts.presence.touch(peer);
      log.info(
        { client: peer.name ?? peer.id, tasks: added.length, fresh, duplicates: added.length - fresh },
        'tasks added',
      );
      answer = { ok: true, tasks };
    } catch (err) {
      if (err instanceof InvalidTaskError) {
        log.info(
          { client: peer.name ?? peer.id, problems: err.problems.slice(0, 5), count: err.problems.length },
          'batch refused',
        );
        answer = {
          ok: false,
          code: err.code,
          message: `batch refused, nothing was added: ${err.message}`,
          problems: err.problems,
        };
      } else {
        log.error({ err, client: peer.name ?? peer.id }, 'could not add a batch');
        const message = `the batch could not be stored, nothing was added; send it again (${(err as Error).message})`;
        answer = { ok: false, code: 'ADD_FAILED', message, problems: [{ index: -1, field: '(batch)', message }] };
      }
    }
    if (peer.connected) for (const [event, data] of answerEvents(answer)) this.opts.emit(peer, event, data);
    return answer;
  }
}
