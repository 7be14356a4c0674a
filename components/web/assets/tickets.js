// Tickets on sale, selling a ticket, and a ticket's page with its Purchase button.

import { api, apiPage, ApiError, retryWhileNotReady } from './api.js';
import { busy, errorBox, field, h, money, render, showErrors, signInFirst } from './dom.js';

export async function ticketsPage({ main, user }) {
  const title = 'Tickets on sale';
  let page;
  try {
    page = await apiPage('/api/tickets');
  } catch (error) {
    const errors = errorBox();
    errors.show(error.errors);
    render(main, title, h('h1', {}, title), errors.element);
    return;
  }
  if (page.items.length === 0) {
    render(main, title, h('h1', {}, title), h('p', { class: 'empty' },
      'No tickets are on sale right now. ',
      user ? h('a', { href: '/tickets/new' }, 'Put one on sale') : null));
    return;
  }
  // The catalogue comes a page at a time: "More tickets" adds the next page below.
  const list = h('ul', { class: 'ticket-list' });
  const errors = errorBox();
  const footer = h('div', { class: 'list-footer' });
  const show = ({ items, next }) => {
    list.append(...items.map((ticket) => h('li', { class: 'card ticket-row' },
      h('a', { href: `/tickets/${encodeURIComponent(ticket.id)}` }, ticket.title),
      h('span', { class: 'price' }, money(ticket.price)))));
    if (!next) {
      footer.replaceChildren(h('p', { class: 'end-of-list' }, "That's every ticket on sale."));
      return;
    }
    const more = h('button', { type: 'button', class: 'more' }, 'More tickets');
    more.addEventListener('click', () => busy(more, 'Loading…', async () => {
      errors.clear();
      try {
        show(await apiPage(next));
      } catch (error) {
        errors.show(error.errors);
      }
    }));
    footer.replaceChildren(more);
  };
  show(page);
  render(main, title, h('h1', {}, title), list, errors.element, footer);
}

export async function newTicketPage({ main, user }) {
  if (!user) return signInFirst();
  const title = field('title', 'Title', { type: 'text', autocomplete: 'off', required: true });
  const price = field('price', 'Price', {
    type: 'number', inputmode: 'decimal', min: '0.01', step: '0.01', required: true,
  });
  const errors = errorBox();
  const submit = h('button', { type: 'submit' }, 'Put on sale');
  const form = h('form', { novalidate: true, class: 'card form' },
    errors.element, title.element, price.element, submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    errors.clear();
    await busy(submit, 'Putting on sale…', async () => {
      // The API validates the price; what cannot be read as a number goes as null, which
      // it rejects with a message next to the field.
      const value = price.input.value.trim();
      const amount = value === '' ? null : Number(value);
      try {
        const ticket = await api('POST', '/api/tickets', {
          title: title.input.value,
          price: Number.isFinite(amount) ? amount : null,
        });
        location.assign(`/tickets/${encodeURIComponent(ticket.id)}`);
      } catch (error) {
        showErrors(error, [title, price], errors);
      }
    });
  });
  render(main, 'Sell a ticket', h('h1', {}, 'Sell a ticket'), form);
  title.input.focus();
}

// While a ticket is reserved its page looks again, to offer it as soon as an order for it
// expires: after 3 s, then less and less often (a paid ticket stays reserved for good).
const RESERVED_POLL_FIRST_MS = 3000;
const RESERVED_POLL_MAX_MS = 30000;

export async function ticketPage({ main, user, id }) {
  const errors = errorBox();
  let ticket;
  try {
    ticket = await api('GET', `/api/tickets/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      render(main, 'Ticket not found', h('h1', {}, 'Ticket not found'),
        h('p', {}, 'There is no such ticket. ', h('a', { href: '/' }, 'See the tickets on sale'), '.'));
      return;
    }
    errors.show(error.errors);
    render(main, 'Ticket', h('h1', {}, 'Ticket'), errors.element);
    return;
  }

  const status = h('div', { class: 'ticket-status', 'aria-live': 'polite' });
  render(main, ticket.title,
    h('article', { class: 'card ticket' },
      h('h1', {}, ticket.title),
      h('p', { class: 'price' }, money(ticket.price)),
      status),
    errors.element);

  let pollMs = RESERVED_POLL_FIRST_MS;
  const show = () => {
    if (ticket.orderId) {
      status.replaceChildren(h('p', { class: 'reserved' }, 'This ticket is reserved.'));
      setTimeout(refresh, pollMs);
      pollMs = Math.min(pollMs * 1.5, RESERVED_POLL_MAX_MS);
    } else if (user && user.id === ticket.userId) {
      status.replaceChildren(h('p', { class: 'note' }, 'You are selling this ticket.'));
    } else {
      status.replaceChildren(h('button', { type: 'button', class: 'primary', onclick: () => purchase() }, 'Purchase'));
    }
  };

  const refresh = async () => {
    try {
      ticket = await api('GET', `/api/tickets/${encodeURIComponent(id)}`);
    } catch {
      // A failed look is tried again later.
    }
    show();
  };

  const purchase = async () => {
    if (!user) return signInFirst();
    errors.clear();
    const button = status.querySelector('button');
    await busy(button, 'Reserving…', async () => {
      try {
        const order = await retryWhileNotReady(() => api('POST', '/api/orders', { ticketId: ticket.id }));
        location.assign(`/orders/${encodeURIComponent(order.id)}`);
      } catch (error) {
        errors.show(error.errors ?? [{ message: String(error) }]);
      }
    });
  };

  show();
}
