import { describe, expect, it } from 'vitest';
import { useHarness, waitFor } from './support/harness.ts';

interface Spec {
  n: string;
  priority: number;
  /** Indexes of the tasks of the batch it depends on. */
  deps: number[];
}

const task = (s: Spec, all: Spec[]) => ({
  module: 'record',
  params: [{ n: s.n }],
  priority: s.priority,
  dependencies: s.deps.map((d) => ({ module: 'record', params: [{ n: all[d]!.n }] })),
});

/**
 * The order one consumer running one task at a time sees: higher priority first; among equals,
 * the order in which tasks became ready — the batch's order for those without dependencies, and
 * for a dependent the moment its last dependency completed (it queues behind equals waiting).
 */
function expectedOrder(specs: Spec[]): string[] {
  const waiting = specs.map((s) => s.deps.length);
  const dependentsOf = specs.map((_, i) => specs.flatMap((s, j) => (s.deps.includes(i) ? [j] : [])));
  let seq = 0;
  const ready: { i: number; seq: number }[] = [];
  specs.forEach((s, i) => s.deps.length || ready.push({ i, seq: seq++ }));
  const out: string[] = [];
  while (ready.length) {
    ready.sort((a, b) => specs[b.i]!.priority - specs[a.i]!.priority || a.seq - b.seq);
    const { i } = ready.shift()!;
    out.push(specs[i]!.n);
    for (const j of dependentsOf[i]!) if (--waiting[j]! === 0) ready.push({ i: j, seq: seq++ });
  }
  return out;
}

/** A seeded generator, so that a failing batch can be run again as it was. */
function random(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x / 2 ** 31;
  };
}

/**
 * A batch of `n` tasks with mixed priorities where about a third depend on one or two others of
 * the batch (before or after them in it), each depended on by at most one task and without
 * cycles: every dependency is a direct flow child, released in the step that finishes it.
 */
function mixedBatch(n: number, seed: number): Spec[] {
  const rnd = random(seed);
  const rank = Array.from({ length: n }, (_, i) => i).sort(() => rnd() - 0.5);
  const taken = new Set<number>();
  return Array.from({ length: n }, (_, i) => {
    const deps: number[] = [];
    if (rnd() < 0.35) {
      const free = rank.flatMap((r, j) => (r < rank[i]! && !taken.has(j) ? [j] : []));
      for (let k = 0; k < 2 && free.length && (k === 0 || rnd() < 0.5); k++) {
        const [j] = free.splice(Math.floor(rnd() * free.length), 1);
        taken.add(j!);
        deps.push(j!);
      }
    }
    return { n: `t${i}`, priority: [40, 50, 50, 50, 60][Math.floor(rnd() * 5)]!, deps };
  });
}

describe('order inside a batch', () => {
  const h = useHarness();

  async function runOrder(specs: Spec[]): Promise<string[]> {
    const c = h.client();
    const added = await c.add(specs.map((s) => task(s, specs)));
    expect(added.every((a) => !a.duplicate)).toBe(true);
    const seen: string[] = [];
    const w = h.worker({ concurrency: 1 });
    w.worker.on('completed', (_job, result) => seen.push(result.params.n));
    await waitFor(() => seen.length === specs.length, `${specs.length} completions`, 60_000);
    return seen;
  }

  it('runs [A, B, C after A] of equal priority as A, B, C', async () => {
    const specs: Spec[] = [
      { n: 'A', priority: 50, deps: [] },
      { n: 'B', priority: 50, deps: [] },
      { n: 'C', priority: 50, deps: [0] },
    ];
    expect(await runOrder(specs)).toEqual(['A', 'B', 'C']);
  });

  it('keeps a dependency its FIFO place among equals wherever its dependent stands', async () => {
    const specs: Spec[] = [
      { n: 'A', priority: 50, deps: [2] },
      { n: 'B', priority: 50, deps: [] },
      { n: 'C', priority: 50, deps: [] },
      { n: 'D', priority: 50, deps: [] },
      { n: 'E', priority: 50, deps: [1, 3] },
    ];
    expect(await runOrder(specs)).toEqual(['B', 'C', 'D', 'A', 'E']);
  });

  for (const seed of [18, 7, 2026]) {
    it(`runs a bigger mixed batch by priority, then in the order its tasks became ready (seed ${seed})`, async () => {
      const specs = mixedBatch(60, seed);
      expect(specs.filter((s) => s.deps.length).length).toBeGreaterThan(10);
      expect(await runOrder(specs)).toEqual(expectedOrder(specs));
    });
  }
});
