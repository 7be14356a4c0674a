// My orders, and an order's page: the time left to pay, counting down, and the Pay button.

import { api, apiPage, ApiError, retryWhileNotReady, serverNow } from './api.js';
import { busy, errorBox, h, money, render, signInFirst, statusBadge } from './dom.js';
import { paymentMethod } from './payment.js';

export async function ordersPage({ main, user }) {
  if (!user) return signInFirst();
  const title = 'My orders';
  const errors = errorBox();
  // Every page of them (a user's orders are few), to show the newest first.
  const orders = [];
  try {
    for (let next = '/api/orders'; next;) {
      const page = await apiPage(next);
      orders.push(...page.items);
      next = page.next;
    }
  } catch (error) {
    errors.show(error.errors);
    render(main, title, h('h1', {}, title), errors.element);
    return;
  }
  const list = orders.length === 0
    ? h('p', { class: 'empty' }, 'You have no orders yet. ', h('a', { href: '/' }, 'See the tickets on sale'), '.')
    : h('ul', { class: 'order-list' }, orders.slice().reverse().map((order) => h('li', { class: 'card order-row' },
      h('a', { href: `/orders/${encodeURIComponent(order.id)}` }, order.ticket.title),
      h('span', { class: 'price' }, money(order.ticket.price)),
      statusBadge(order.status))));
  render(main, title, h('h1', {}, title), list);
}

/** `75` seconds as `1:15`; an hour or more as `1:02:03`. */
function clock(seconds) {
  const two = (n) => String(n).padStart(2, '0');
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
}

// How long the page waits for the orders service to mark a paid order complete (it learns of
// the payment through an event).
const COMPLETE_WAIT_MS = 60000;

export async function orderPage({ main, user, id }) {
  if (!user) return signInFirst();
  const path = `/api/orders/${encodeURIComponent(id)}`;
  const errors = errorBox();
  let order;
  try {
    order = await api('GET', path);
  } catch (error) {
    const missing = error instanceof ApiError && (error.status === 404 || error.status === 401);
    const title = missing ? 'Order not found' : 'Order';
    if (missing) errors.show([{ message: 'There is no such order among yours.' }]);
    else errors.show(error.errors);
    render(main, title, h('h1', {}, title), errors.element,
      h('p', {}, h('a', { href: '/orders' }, 'See my orders'), '.'));
    return;
  }

  const expiresAt = Date.parse(order.expiresAt);
  const statusLine = h('p', { class: 'order-status' });
  const timer = h('p', { class: 'timer', role: 'timer' });
  const payment = h('div', { class: 'payment' });
  const pay = h('button', { type: 'button', class: 'primary' }, 'Pay');
  const outcome = h('div', { class: 'outcome', 'aria-live': 'polite' });
  render(main, `Order: ${order.ticket.title}`,
    h('article', { class: 'card order' },
      h('h1', {}, order.ticket.title),
      h('p', { class: 'price' }, money(order.ticket.price)),
      statusLine, timer, outcome, errors.element, payment, pay),
    h('p', { class: 'aside' }, h('a', { href: '/orders' }, 'See my orders')));

  let paying = false;
  let ticking = null;
  const secondsLeft = () => Math.max(0, Math.ceil((expiresAt - serverNow()) / 1000));
  const open = () => order.status === 'created' || order.status === 'awaiting:payment';

  // The page as the order is now: what it can still become decides what is shown.
  const show = () => {
    const expired = order.status === 'cancelled' || (open() && !paying && secondsLeft() === 0);
    // Past its time an open order is as good as cancelled (the service cancels it a moment
    // later): its stored status would only confuse.
    statusLine.hidden = expired && open();
    statusLine.replaceChildren('Status: ', statusBadge(order.status));
    if (order.status === 'complete') {
      timer.hidden = true;
      outcome.replaceChildren(h('p', { class: 'success' }, 'Paid. The ticket is yours.'));
    } else if (expired) {
      timer.hidden = true;
      const word = order.status === 'cancelled' && serverNow() < expiresAt ? 'Order cancelled' : 'Order expired';
      outcome.replaceChildren(h('p', { class: 'expired' }, word),
        // A payment that went through as the order was cancelled is given back.
        order.refunded
          ? h('p', { class: 'refunded' }, 'Your payment was refunded in full.')
          : null,
        h('p', {}, 'The ticket goes back on sale. ', h('a', { href: `/tickets/${encodeURIComponent(order.ticket.id)}` }, 'See the ticket'), '.'));
    } else {
      timer.hidden = false;
      timer.textContent = `Time left to pay: ${clock(secondsLeft())}`;
    }
    const payable = open() && !expired;
    pay.hidden = !payable;
    payment.hidden = !payable;
    if (!payable && ticking) {
      clearInterval(ticking);
      ticking = null;
    }
  };

  show();
  if (!open()) return;
  ticking = setInterval(show, 1000);

  let method;
  try {
    method = await paymentMethod(payment);
  } catch (error) {
    errors.show([{ message: error.message }]);
    pay.disabled = true;
    return;
  }

  pay.addEventListener('click', async () => {
    errors.clear();
    await busy(pay, 'Paying…', async () => {
      try {
        const token = await method.token();
        paying = true;
        await retryWhileNotReady(() => api('POST', '/api/payments', { orderId: order.id, token }));
        outcome.replaceChildren(h('p', { class: 'note' }, 'Payment received. Confirming…'));
        order = await untilComplete(path, order);
      } catch (error) {
        paying = false;
        errors.show(error.errors ?? [{ message: error.message }]);
        // A declined card or a lost race: show what the order is now.
        order = await api('GET', path).catch(() => order);
      }
      show();
    });
  });
}

/** The order once the orders service has marked it complete (or as it is after a minute). */
async function untilComplete(path, order) {
  const deadline = Date.now() + COMPLETE_WAIT_MS;
  let current = order;
  while (current.status !== 'complete' && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    current = await api('GET', path).catch(() => current);
  }
  return current;
}
