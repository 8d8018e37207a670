// Finishing lives in queue/finishing.ts; queue-fetcher.ts still imports these names from here.
export { Finishing as RunnerFinishing, type OutcomeKeys } from '../queue/finishing.ts';
