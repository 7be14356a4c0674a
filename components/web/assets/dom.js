// Building the pages: elements from plain values (text is always text, never markup, so a
// ticket's title cannot inject anything), error lists, form fields, and formatting.

/**
 * `h('a', {href: '/'}, 'Home')`: an element with attributes and children. `on<event>`
 * attributes add listeners; null, undefined and false attributes or children are left out.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value == null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  element.append(...children.flat().filter((child) => child != null && child !== false));
  return element;
}

/** Replaces the page's content, and its document title. */
export function render(main, title, ...content) {
  document.title = `${title} · Ticketing`;
  main.replaceChildren(...content);
}

const dollars = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });

/** `20` as `$20.00`. */
export function money(price) {
  return dollars.format(price);
}

/** An order status as a badge; the text is the API's own status (`complete`, ...). */
export function statusBadge(status) {
  const kind = status.replace(/[^a-z]/g, '-');
  return h('span', { class: `status status-${kind}` }, status);
}

/**
 * A place for errors that belong to no field: `show(errors)` shows their messages (one as a
 * sentence, several as a list), `clear()` hides it. It is an alert, so screen readers
 * announce it when it fills.
 */
export function errorBox() {
  const box = h('div', { class: 'errors', role: 'alert', hidden: true });
  return {
    element: box,
    show(errors) {
      const messages = errors.map((error) => error.message);
      box.replaceChildren(messages.length === 1
        ? h('p', {}, messages[0])
        : h('ul', {}, messages.map((message) => h('li', {}, message))));
      box.hidden = messages.length === 0;
    },
    clear() {
      box.replaceChildren();
      box.hidden = true;
    },
  };
}

/**
 * A labelled input with a place for its error under it, tied to it by aria-describedby.
 * `name` is the API's field name, so errors with that `field` land here.
 */
export function field(name, label, attributes = {}) {
  const id = `field-${name}`;
  const error = h('p', { class: 'field-error', id: `${id}-error`, hidden: true });
  const input = h('input', { id, name, ...attributes });
  return {
    name,
    input,
    element: h('div', { class: 'field' }, h('label', { for: id }, label), input, error),
    setError(message) {
      error.textContent = message ?? '';
      error.hidden = !message;
      if (message) {
        input.setAttribute('aria-invalid', 'true');
        input.setAttribute('aria-describedby', error.id);
      } else {
        input.removeAttribute('aria-invalid');
        input.removeAttribute('aria-describedby');
      }
    },
  };
}

/**
 * Shows an API failure on a form: each error whose `field` is one of `fields` next to that
 * field, the others in `box`; focuses the first field in error.
 */
export function showErrors(error, fields, box) {
  const errors = error.errors ?? [{ message: String(error.message ?? error) }];
  const byName = new Map(fields.map((f) => [f.name, f]));
  for (const f of fields) f.setError(null);
  const others = [];
  for (const item of errors) {
    const target = item.field && byName.get(item.field);
    if (target) target.setError(item.message);
    else others.push(item);
  }
  box.show(others);
  const first = fields.find((f) => f.input.getAttribute('aria-invalid') === 'true');
  first?.input.focus();
}

/** A submit button that says it is busy while `work` runs, and is disabled meanwhile. */
export async function busy(button, label, work) {
  const idle = button.textContent;
  button.disabled = true;
  button.textContent = label;
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.textContent = idle;
  }
}

/** The `next` query parameter when it leads to a page of this site, else `fallback`. */
export function nextPath(fallback = '/') {
  const next = new URLSearchParams(location.search).get('next');
  if (!next) return fallback;
  // Resolved the way the browser will resolve it (`//host` and `/\host` are other sites).
  const target = new URL(next, location.origin);
  return target.origin === location.origin ? target.pathname + target.search : fallback;
}

/** Sends an anonymous visitor to the sign-in page, coming back here afterwards. */
export function signInFirst() {
  location.assign(`/auth/signin?next=${encodeURIComponent(location.pathname)}`);
}
