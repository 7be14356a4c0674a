// The client's entry point. Every page is its own URL served by the web component, which
// names it in `<main data-page>`; this module asks the API who is signed in, fills the
// header's links, and renders the page.

import { currentUser } from './api.js';
import { h, render } from './dom.js';
import { signInPage, signOutPage, signUpPage } from './auth.js';
import { newTicketPage, ticketPage, ticketsPage } from './tickets.js';
import { orderPage, ordersPage } from './orders.js';

const pages = {
  tickets: ticketsPage,
  signup: signUpPage,
  signin: signInPage,
  signout: signOutPage,
  'new-ticket': newTicketPage,
  ticket: ticketPage,
  orders: ordersPage,
  order: orderPage,
};

function renderHeader(user) {
  const link = (href, text) => h('li', {}, h('a', { href }, text));
  const links = user
    ? [
      link('/tickets/new', 'Sell Tickets'),
      link('/orders', 'My Orders'),
      link('/auth/signout', 'Sign Out'),
    ]
    : [link('/auth/signup', 'Sign Up'), link('/auth/signin', 'Sign In')];
  document.getElementById('nav-links').replaceChildren(...links);
  for (const a of document.querySelectorAll('#nav-links a')) {
    if (a.getAttribute('href') === location.pathname) a.setAttribute('aria-current', 'page');
  }
}

async function start() {
  const main = document.getElementById('main');
  const page = pages[main.dataset.page];
  let user = null;
  try {
    user = await currentUser();
  } catch (error) {
    if (page) {
      render(main, 'Unavailable', h('h1', {}, 'The service is unavailable'),
        h('p', { role: 'alert' }, error.message));
    }
    main.removeAttribute('aria-busy');
    return;
  } finally {
    renderHeader(user);
  }
  // The id in /tickets/<id> and /orders/<id>.
  const id = decodeURIComponent(location.pathname.split('/').filter(Boolean)[1] ?? '');
  if (page) await page({ main, user, id });
  main.removeAttribute('aria-busy');
}

// A page restored from the back/forward cache shows what was true when it was left (a
// ticket still on sale, an order not yet paid): load it afresh instead.
window.addEventListener('pageshow', (event) => {
  if (event.persisted) location.reload();
});

start();
