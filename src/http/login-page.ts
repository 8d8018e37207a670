/** Escapes text for HTML content and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/**
 * The login form: one labelled password field posting to `/login`, the path to return to, and
 * what went wrong (announced to screen readers). Self-contained, so it needs no asset that
 * itself requires a login.
 */
export function loginPage(opts: { next?: string; message?: string; required?: boolean }): string {
  const message = opts.message
    ? `<p id="problem" role="alert">${escapeHtml(opts.message)}</p>`
    : opts.required === false
      ? '<p role="status">No token is configured on this master (TASKMASTER_TOKEN): the status page is open.</p>'
      : '';
  const described = opts.message ? ' aria-describedby="problem"' : '';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · Taskmaster</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1b1f24; }
  main { max-width: 24rem; margin: 10vh auto; padding: 2rem; background: #fff; border-radius: 8px;
    box-shadow: 0 1px 4px rgba(0,0,0,.15); }
  h1 { font-size: 1.4rem; margin-top: 0; }
  label { display: block; font-weight: 600; margin-bottom: .25rem; }
  input { width: 100%; box-sizing: border-box; font: inherit; padding: .5rem;
    border: 1px solid #57606a; border-radius: 4px; }
  button { margin-top: 1rem; font: inherit; padding: .5rem 1.25rem; border: 0; border-radius: 4px;
    background: #0b5cad; color: #fff; cursor: pointer; }
  input:focus, button:focus { outline: 3px solid #f0b400; outline-offset: 2px; }
  #problem { color: #a40e26; font-weight: 600; }
</style>
</head>
<body>
<main>
<h1>Taskmaster</h1>
${message}
<form method="post" action="/login">
  <input type="hidden" name="next" value="${escapeHtml(opts.next ?? '/')}">
  <label for="token">Token</label>
  <input id="token" name="token" type="password" autocomplete="current-password" required autofocus${described}>
  <button type="submit">Log in</button>
</form>
</main>
</body>
</html>
`;
}
