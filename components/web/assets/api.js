// The JSON API of docs/API.md, from the browser. The session is an HttpOnly cookie that the
// browser sends by itself; scripts never see it.

/** An API failure: the HTTP status and the `errors` of its body ({message, field?}). */
export class ApiError extends Error {
  constructor(status, errors) {
    super(errors.map((e) => e.message).join('; '));
    this.status = status;
    this.errors = errors;
  }
}

// How far the server's clock is ahead of this browser's (ms), from the `Date` header of API
// answers: an order's countdown is against the server's `expiresAt`. `Date` has whole
// seconds, so differences below 2 s are taken as none.
let clockOffset = 0;

/** The server's time now, in ms since the epoch. */
export function serverNow() {
  return Date.now() + clockOffset;
}

function noteServerDate(response) {
  const date = Date.parse(response.headers.get('date') ?? '');
  if (Number.isNaN(date)) return;
  const offset = date + 500 - Date.now();
  clockOffset = Math.abs(offset) < 2000 ? 0 : offset;
}

/** Calls the API; resolves to the parsed JSON body (null when empty), or throws ApiError. */
export async function api(method, path, body) {
  return (await call(method, path, body)).data;
}

/**
 * One page of a paged listing (`GET /api/tickets`, `/api/orders`): its items, and the path
 * of the next page from the `Link: <...>; rel="next"` header (null on the last page).
 */
export async function apiPage(path) {
  const { data, response } = await call('GET', path);
  return { items: data ?? [], next: nextLink(response.headers.get('link')) };
}

/** The target of `rel="next"` in a Link header (RFC 8288), as a same-origin path. */
function nextLink(header) {
  for (const link of (header ?? '').split(',')) {
    const match = /^\s*<([^>]*)>(.*)$/.exec(link);
    if (match && /;\s*rel="?next"?/i.test(match[2])) {
      const url = new URL(match[1], location.href);
      return url.origin === location.origin ? url.pathname + url.search : null;
    }
  }
  return null;
}

async function call(method, path, body) {
  const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, [{ message: 'The server cannot be reached. Check your connection and try again.' }]);
  }
  noteServerDate(response);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: only an error can be like that, and it is reported by its status below.
  }
  if (!response.ok) {
    const errors = Array.isArray(data?.errors) && data.errors.length > 0
      ? data.errors
      : [{ message: `The server answered ${response.status}. Please try again.` }];
    throw new ApiError(response.status, errors);
  }
  return { data, response };
}

/**
 * Calls `attempt` until it does not fail with 404, 409 or 503, for at most `timeoutMs`.
 * Services learn of each other's tickets and orders through events, a moment after they were
 * made: an order for a ticket the orders service has not heard of yet is a 404 for that
 * moment, a payment for an order the payments service has not heard of yet a 409 ("try
 * again"); a 503 is a backend away for a moment.
 */
export async function retryWhileNotReady(attempt, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (let wait = 250; ; wait = Math.min(wait * 2, 2000)) {
    try {
      return await attempt();
    } catch (error) {
      const retried = error instanceof ApiError && [404, 409, 503].includes(error.status);
      if (!retried || Date.now() + wait > deadline) {
        throw error;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

/** The signed-in user ({id, email}) or null. */
export async function currentUser() {
  const data = await api('GET', '/api/users/currentuser');
  return data?.currentUser ?? null;
}
