// The JSON API, as the page calls it. The auth cookie goes with every same-origin request.

/** An answer other than 2xx: `status`, and the API's `code` and `param` when it gave them. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error ?? body?.message ?? `the server answered ${status}`);
    this.status = status;
    this.code = body?.code;
    this.param = body?.param;
  }
}

const unauthorizedListeners = new Set();

/** Calls `fn` whenever the server answers 401 (no or a wrong token). */
export function onUnauthorized(fn) {
  unauthorizedListeners.add(fn);
}

/** `query` values that are empty are left out, so a blank form field means "any". */
export function withQuery(path, query = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === '') continue;
    params.set(key, String(value));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

export async function api(path, { method = 'GET', query, body } = {}) {
  const res = await fetch(withQuery(path, query), {
    method,
    credentials: 'same-origin',
    headers: { accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let data;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON (a proxy's error page): the status says enough.
    data = undefined;
  }
  if (res.status === 401) for (const fn of unauthorizedListeners) fn();
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** POSTs an action (`/api/tasks/7/retry`); resolves with the server's answer. */
export function post(path, query) {
  return api(path, { method: 'POST', query });
}

export const enc = encodeURIComponent;
