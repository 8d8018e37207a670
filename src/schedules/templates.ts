/**
 * Placeholders in a schedule's params templates, replaced at each firing in every string of the
 * template (object keys are left alone):
 * - `{{ticker}}`: the ticker of the task (in the schedule's params, not the summary's);
 * - `{{schedule}}`: the schedule's name;
 * - `{{scheduledAt}}`: the firing's scheduled time, ISO 8601 in UTC (for `schedules run`, when it ran);
 * - `"{{tickers}}"`, as a whole string only: the firing's tickers, as an array.
 * A schedule's params with no `{{ticker}}` anywhere get the ticker as their last parameter.
 */
export interface TemplateVars {
  ticker?: string;
  schedule: string;
  scheduledAt: string;
  tickers: readonly string[];
}

const PLACEHOLDER = /\{\{([^{}]*)\}\}/g;
const TEXT_PLACEHOLDERS = ['ticker', 'schedule', 'scheduledAt'] as const;
const WHOLE_TICKERS = '{{tickers}}';

/** Placeholders allowed in a template, as said in messages. */
export function placeholderRule(withTicker: boolean): string {
  const text = TEXT_PLACEHOLDERS.filter((p) => withTicker || p !== 'ticker').map((p) => `{{${p}}}`);
  return `${text.join(', ')} anywhere in a string, or "${WHOLE_TICKERS}" as a whole string`;
}

/** The first unknown or misplaced placeholder in `template`, as `path: message`; undefined when all are fine. */
export function templateProblem(template: unknown, withTicker: boolean, path = 'params'): string | undefined {
  if (typeof template === 'string') {
    if (template === WHOLE_TICKERS) return undefined;
    for (const m of template.matchAll(PLACEHOLDER)) {
      const name = m[1]!;
      const known = (TEXT_PLACEHOLDERS as readonly string[]).includes(name) && (withTicker || name !== 'ticker');
      if (!known) {
        const why = name === 'tickers' ? 'stands alone: the whole string must be "{{tickers}}"' : 'is unknown';
        return `${path}: the placeholder ${m[0]} ${why}; allowed: ${placeholderRule(withTicker)}`;
      }
    }
    return undefined;
  }
  if (Array.isArray(template)) {
    for (let i = 0; i < template.length; i++) {
      const p = templateProblem(template[i], withTicker, `${path}[${i}]`);
      if (p) return p;
    }
  } else if (template && typeof template === 'object') {
    for (const [k, v] of Object.entries(template)) {
      const p = templateProblem(v, withTicker, `${path}.${k}`);
      if (p) return p;
    }
  }
  return undefined;
}

/** Whether `{{ticker}}` appears in any string of the template. */
export function mentionsTicker(template: unknown): boolean {
  if (typeof template === 'string') return template.includes('{{ticker}}');
  if (Array.isArray(template)) return template.some(mentionsTicker);
  if (template && typeof template === 'object') return Object.values(template).some(mentionsTicker);
  return false;
}

/** A copy of `template` with its placeholders replaced. */
export function expandTemplate(template: unknown, vars: TemplateVars): unknown {
  if (typeof template === 'string') {
    if (template === WHOLE_TICKERS) return [...vars.tickers];
    if (!template.includes('{{')) return template;
    return template.replace(PLACEHOLDER, (whole, name: string) => {
      const value = vars[name as 'ticker' | 'schedule' | 'scheduledAt'];
      return typeof value === 'string' ? value : whole;
    });
  }
  if (Array.isArray(template)) return template.map((v) => expandTemplate(v, vars));
  if (template && typeof template === 'object') {
    // fromEntries defines each key, so a `__proto__` key stays a key (and is refused by validation).
    return Object.fromEntries(Object.entries(template).map(([k, v]) => [k, expandTemplate(v, vars)]));
  }
  return template;
}
