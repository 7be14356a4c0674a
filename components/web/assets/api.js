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
  return data;
}

/**
 * Calls `attempt` until it does not fail with 404, for at most `timeoutMs`. Services learn
 * of each other's tickets and orders through events, a moment after they were made: an order
 * for a ticket the orders service has not heard of yet, or a payment for an order the
 * payments service has not heard of yet, is a 404 for that moment.
 */
export async function retryWhileNotFound(attempt, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (let wait = 250; ; wait = Math.min(wait * 2, 2000)) {
    try {
      return await attempt();
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404 || Date.now() + wait > deadline) {
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
