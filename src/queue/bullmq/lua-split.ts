import type { BullmqScript } from './scripts.ts';

/**
 * A BullMQ script split so that it can run many times in one script without re-creating its
 * helper functions each time: `names`, the locals its header sets from KEYS and ARGV (declared
 * once, assigned per run, so helpers that see them see the run's values as in the original);
 * `functions`, its helpers, defined once; `body`, the header's assignments and the main code.
 * Undefined when the script has another shape (then it is embedded whole, which is slower).
 */
export function splitBullmqScript(content: string): { names: string[]; functions: string; body: string } | undefined {
  const lines = content.split('\n');
  let i = lines.findIndex((l) => l.startsWith('local '));
  const names: string[] = [];
  const assignments: string[] = [];
  for (let m; i >= 0 && (m = /^local (\w+)(?:\s*=\s*(.+))?$/.exec(lines[i]!)) && m[1] !== 'function'; i++) {
    names.push(m[1]!);
    // A local declared without a value starts each run as nil, as it starts each script.
    assignments.push(`${m[1]} = ${m[2] ?? 'nil'}`);
  }
  let last = -1;
  lines.forEach((l, n) => {
    if (l.startsWith('local function ')) last = n;
  });
  const end = lines.findIndex((l, n) => n > last && /^end\s*$/.test(l));
  if (!names.length || last < i || end < 0) return undefined;
  // Between the header and the main code only helper definitions and comments may stand at the
  // top level: code there would run once instead of per run.
  let inComment = false;
  for (const l of lines.slice(i, end + 1)) {
    if (inComment) inComment = !l.includes(']]');
    else if (l.startsWith('--[[')) inComment = !l.includes(']]');
    else if (!/^(local function |end\s*$|--|\s|$)/.test(l)) return undefined;
  }
  const functions = lines.slice(i, end + 1).join('\n');
  if (/\b(KEYS|ARGV)\b/.test(functions)) return undefined;
  return { names, functions, body: [...assignments, ...lines.slice(end + 1)].join('\n') };
}

/** Lua that defines local function `fn(KEYS, ARGV)` running `script`. */
function embed(script: BullmqScript, fn: string): string {
  const split = splitBullmqScript(script.content);
  if (!split) return `local function ${fn}(KEYS, ARGV)\n${script.content}\nend`;
  return `local ${fn}\ndo\nlocal ${split.names.join(', ')}\n${split.functions}\n${fn} = function(KEYS, ARGV)\n${split.body}\nend\nend`;
}

/**
 * Lua that defines the local table `table` of functions `(KEYS, ARGV)`, one per script of
 * `scripts` in its order (from 1), each running that script.
 */
export function embedBullmqScripts(scripts: readonly BullmqScript[], table: string): string {
  const fns = scripts.map((_, n) => `bullmq${n + 1}`);
  return `${scripts.map((s, n) => embed(s, fns[n]!)).join('\n')}\nlocal ${table} = { ${fns.join(', ')} }`;
}
