// The web client in a real browser (Debian's chromium, driven by playwright-core), as a
// seller and a buyer: run by host/tests/browser.rs against two running hosts.
//
//   APP_URL     a host with the default order window
//   EXPIRY_URL  a host whose orders expire after a few seconds
//   STRIPE_URL  a host with a Stripe publishable key (Stripe.js is a local fake here)
//   CHROMIUM    the browser executable
//   SCREENSHOTS the directory for a screenshot of each page
//
// Every wait is Playwright's own (it polls the page) with a long timeout: the machine may be
// busy. Exits non-zero with the failing step on the first failure.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const APP_URL = required('APP_URL');
const EXPIRY_URL = required('EXPIRY_URL');
const STRIPE_URL = required('STRIPE_URL');
const SCREENSHOTS = required('SCREENSHOTS');
const TIMEOUT = 60_000;

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

let step = 'starting';
let shots = 0;
const problems = [];

/** Fails on what the page's console reports as broken (CSP refusals, script errors). */
function watch(page, who) {
  page.on('pageerror', (error) => {
    problems.push(`${who}: page error: ${error.message}`);
    console.error(`${who}: page error: ${error.message}`);
  });
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    // The browser logs every 4xx answer; the journey makes some on purpose (bad input).
    if (message.text().startsWith('Failed to load resource')) return;
    problems.push(`${who}: console error: ${message.text()}`);
  });
}

/** Fails on any request that leaves `origin`: the pages need nothing from elsewhere. */
function stayHome(context, origin, who) {
  context.on('request', (request) => {
    if (new URL(request.url()).origin !== new URL(origin).origin) {
      problems.push(`${who}: a request left the site: ${request.url()}`);
    }
  });
}

async function shot(page, name) {
  shots += 1;
  const file = join(SCREENSHOTS, `${String(shots).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

/** Waits until the locator is visible. */
async function visible(locator) {
  await locator.first().waitFor({ state: 'visible', timeout: TIMEOUT });
  return locator.first();
}

/** The error text shown next to the field labelled `label` (aria-describedby). */
async function fieldError(page, label, message) {
  const input = page.getByLabel(label, { exact: true });
  await page.waitForFunction(
    ([el, text]) => {
      const id = el.getAttribute('aria-describedby');
      const note = id && document.getElementById(id);
      return el.getAttribute('aria-invalid') === 'true' && note && !note.hidden && note.textContent === text;
    },
    [await input.elementHandle(), message],
    { timeout: TIMEOUT },
  );
}

/** Waits until the page has rendered what it loaded (app.js clears `aria-busy` then). */
async function rendered(page) {
  await page.locator('main:not([aria-busy="true"])').waitFor({ timeout: TIMEOUT });
}

/**
 * Reloads `page` (once a second, a minute at most) until `ready()` holds, for what the
 * platform does a moment later through events, such as marking a ticket reserved.
 */
async function reloadUntil(page, what, ready) {
  await rendered(page);
  for (let i = 0; !(await ready()); i++) {
    check(i < 60, `still not after a minute: ${what}`);
    await page.waitForTimeout(1000);
    await page.reload();
    await rendered(page);
  }
}

function link(page, name) {
  return page.getByRole('link', { name, exact: true });
}

function button(page, name) {
  return page.getByRole('button', { name, exact: true });
}

async function signUp(page, email, password) {
  await link(page, 'Sign Up').click();
  await page.waitForURL('**/auth/signup', { timeout: TIMEOUT });
  await page.getByLabel('Email', { exact: true }).fill(email);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await button(page, 'Sign Up').click();
  await visible(link(page, 'Sign Out'));
}

async function run(browser) {
  const unique = Date.now().toString(36);
  const title = `Concert ${unique}`;
  const seller = { email: `seller-${unique}@example.com`, password: 'seller-pass' };
  const buyer = { email: `buyer-${unique}@example.com`, password: 'buyer-pass' };

  // The seller, on a desktop screen.
  const sellerContext = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  stayHome(sellerContext, APP_URL, 'seller');
  const s = await sellerContext.newPage();
  watch(s, 'seller');
  s.setDefaultTimeout(TIMEOUT);

  step = 'seller: the landing page';
  await s.goto(APP_URL);
  await visible(s.getByRole('heading', { name: 'Tickets on sale' }));
  await visible(link(s, 'Sign In'));
  await shot(s, 'landing-signed-out');

  step = 'seller: sign-up errors next to their fields';
  await link(s, 'Sign Up').click();
  await s.waitForURL('**/auth/signup');
  await s.getByLabel('Email', { exact: true }).fill('not-an-email');
  await s.getByLabel('Password', { exact: true }).fill('x');
  await button(s, 'Sign Up').click();
  await fieldError(s, 'Email', 'Email must be valid');
  await fieldError(s, 'Password', 'Password must be between 4 and 20 characters');
  await shot(s, 'signup-errors');

  step = 'seller: sign up';
  await s.getByLabel('Email', { exact: true }).fill(seller.email);
  await s.getByLabel('Password', { exact: true }).fill(seller.password);
  await button(s, 'Sign Up').click();
  await visible(link(s, 'Sign Out'));
  await visible(link(s, 'My Orders'));
  check(new URL(s.url()).pathname === '/', `after signing up: ${s.url()}`);
  check(await link(s, 'Sign In').count() === 0, 'Sign In is gone once signed in');

  step = 'seller: ticket validation errors';
  await link(s, 'Sell Tickets').click();
  await s.waitForURL('**/tickets/new');
  await button(s, 'Put on sale').click();
  await fieldError(s, 'Title', 'Title is required');
  await fieldError(s, 'Price', 'Price must be greater than 0');
  await s.getByLabel('Title', { exact: true }).fill(title);
  await s.getByLabel('Price', { exact: true }).fill('-5');
  await button(s, 'Put on sale').click();
  await fieldError(s, 'Price', 'Price must be greater than 0');
  check(await s.getByLabel('Title', { exact: true }).getAttribute('aria-invalid') === null,
    'a corrected title is no longer marked invalid');
  await shot(s, 'sell-errors');

  step = 'seller: sell a ticket';
  await s.getByLabel('Price', { exact: true }).fill('20');
  await button(s, 'Put on sale').click();
  await s.waitForURL('**/tickets/*');
  await visible(s.getByRole('heading', { name: title }));
  await visible(s.getByText('$20.00'));
  const ticketUrl = s.url();
  await shot(s, 'ticket-own');

  step = 'seller: a reload keeps the page';
  await s.reload();
  await visible(s.getByRole('heading', { name: title }));
  check(s.url() === ticketUrl, `reload moved to ${s.url()}`);

  step = 'seller: the ticket is on the landing page';
  await s.getByRole('link', { name: 'Ticketing' }).click();
  await visible(link(s, title));
  await shot(s, 'landing-with-ticket');

  // The catalogue comes a page (20 tickets) at a time: 24 more make a second page.
  step = 'seller: a catalogue longer than a page';
  for (let i = 1; i <= 24; i += 1) {
    const made = await sellerContext.request.post(new URL('/api/tickets', APP_URL).href, {
      data: { title: `Paged ticket ${i}`, price: 10 + i },
    });
    check(made.status() === 201, `creating ticket ${i}: ${made.status()}`);
  }
  await s.reload();
  await visible(link(s, title));
  await visible(link(s, 'Paged ticket 19'));
  check(await s.locator('.ticket-row').count() === 20, 'the first page shows 20 tickets');
  check(await link(s, 'Paged ticket 20').count() === 0, 'ticket 21 waits for the next page');
  check(await s.getByText("That's every ticket on sale.").count() === 0, 'more to come');
  await button(s, 'More tickets').click();
  await visible(link(s, 'Paged ticket 24'));
  await visible(s.getByText("That's every ticket on sale."));
  check(await s.locator('.ticket-row').count() === 25, 'both pages, 25 tickets, once each');
  check(await button(s, 'More tickets').count() === 0, 'no More button on the last page');
  await shot(s, 'landing-every-page');

  // The buyer, on a phone-sized screen.
  const buyerContext = await browser.newContext({
    viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2,
  });
  stayHome(buyerContext, APP_URL, 'buyer');
  const b = await buyerContext.newPage();
  watch(b, 'buyer');
  b.setDefaultTimeout(TIMEOUT);

  step = 'buyer: sign up';
  await b.goto(APP_URL);
  await signUp(b, buyer.email, buyer.password);
  await shot(b, 'phone-landing-signed-in');

  step = 'buyer: open the ticket';
  await link(b, title).click();
  await visible(b.getByRole('heading', { name: title }));
  await shot(b, 'phone-ticket');

  step = 'buyer: purchase';
  await button(b, 'Purchase').click();
  await b.waitForURL('**/orders/*', { timeout: TIMEOUT });
  const orderUrl = b.url();
  const timer = await visible(b.getByRole('timer'));
  const first = await timer.textContent();
  check(/^Time left to pay: \d+:\d\d$/.test(first), `countdown: ${first}`);
  await visible(b.getByText('Test mode'));
  await shot(b, 'phone-order');

  step = 'buyer: the countdown counts down';
  await b.waitForFunction(
    ([el, before]) => el.textContent !== before && el.textContent.startsWith('Time left to pay: '),
    [await timer.elementHandle(), first],
    { timeout: TIMEOUT },
  );

  step = 'buyer: pay';
  await button(b, 'Pay').click();
  await visible(b.getByText('Paid. The ticket is yours.'));
  await visible(b.locator('.order-status').getByText('complete', { exact: true }));
  check(await button(b, 'Pay').count() === 0, 'no Pay button on a paid order');
  await shot(b, 'phone-order-paid');

  step = 'buyer: My Orders says complete';
  await link(b, 'My Orders').click();
  await b.waitForURL('**/orders');
  const row = b.locator('li', { has: link(b, title) });
  await visible(row.getByText('complete', { exact: true }));
  await shot(b, 'phone-my-orders');

  step = 'buyer: the back button';
  await b.goBack();
  await b.waitForURL(orderUrl);
  await visible(b.getByText('Paid. The ticket is yours.'));
  await b.goBack();
  await b.waitForURL(ticketUrl);
  await reloadUntil(b, 'the ticket is reserved', async () => await b.getByText('This ticket is reserved.').count() > 0);
  check(await button(b, 'Purchase').count() === 0, 'no Purchase button on a reserved ticket');
  await shot(b, 'phone-ticket-reserved');

  step = 'seller: a sold ticket leaves the landing page';
  await s.reload();
  await reloadUntil(s, 'the sold ticket is off the landing page', async () => await link(s, title).count() === 0);

  step = 'buyer: sign out';
  await link(b, 'Sign Out').click();
  await visible(link(b, 'Sign In'));
  check(new URL(b.url()).pathname === '/', `after signing out: ${b.url()}`);
  check(await link(b, 'My Orders').count() === 0, 'My Orders is gone once signed out');

  step = 'buyer: signed out, My Orders asks to sign in, and comes back';
  await b.goto(new URL('/orders', APP_URL).href);
  await b.waitForURL('**/auth/signin?next=*');
  await b.getByLabel('Email', { exact: true }).fill(buyer.email);
  await b.getByLabel('Password', { exact: true }).fill('wrong-password');
  await button(b, 'Sign In').click();
  await visible(b.getByRole('alert').getByText('Invalid credentials'));
  await shot(b, 'phone-signin-error');
  await b.getByLabel('Password', { exact: true }).fill(buyer.password);
  await button(b, 'Sign In').click();
  await b.waitForURL('**/orders');
  await visible(b.locator('li', { has: link(b, title) }).getByText('complete', { exact: true }));

  step = 'a page that does not exist';
  const missing = await b.goto(new URL('/no/such/page', APP_URL).href);
  check(missing.status() === 404, `unknown page: ${missing.status()}`);
  await visible(b.getByRole('heading', { name: 'Page not found' }));
  await shot(b, 'phone-not-found');

  await sellerContext.close();
  await buyerContext.close();
}

async function runExpiry(browser) {
  const unique = Date.now().toString(36);
  const title = `Play ${unique}`;

  // The seller puts a ticket on sale through the API (the pages did that above).
  const sellerContext = await browser.newContext();
  stayHome(sellerContext, EXPIRY_URL, 'expiry seller');
  const api = sellerContext.request;
  step = 'expiry: the seller signs up and sells';
  let reply = await api.post(new URL('/api/users/signup', EXPIRY_URL).href, {
    data: { email: `seller-${unique}@example.com`, password: 'seller-pass' },
  });
  check(reply.status() === 201, `signup: ${reply.status()}`);
  reply = await api.post(new URL('/api/tickets', EXPIRY_URL).href, { data: { title, price: 5 } });
  check(reply.status() === 201, `sell: ${reply.status()}`);

  const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  stayHome(context, EXPIRY_URL, 'expiry buyer');
  const b = await context.newPage();
  watch(b, 'expiry buyer');
  b.setDefaultTimeout(TIMEOUT);

  step = 'expiry: the buyer signs up, and a `next` leading to another site is ignored';
  await b.goto(new URL('/auth/signup?next=%2F%5Cevil.example%2F', EXPIRY_URL).href);
  await b.getByLabel('Email', { exact: true }).fill(`buyer-${unique}@example.com`);
  await b.getByLabel('Password', { exact: true }).fill('buyer-pass');
  await button(b, 'Sign Up').click();
  await visible(link(b, 'Sign Out'));
  check(b.url() === new URL('/', EXPIRY_URL).href, `after signing up: ${b.url()}`);

  step = 'expiry: the buyer purchases';
  await link(b, title).click();
  const ticketUrl = b.url();
  await button(b, 'Purchase').click();
  await b.waitForURL('**/orders/*');

  step = 'expiry: the order page says the order expired';
  await visible(b.getByText('Order expired'));
  check(await button(b, 'Pay').count() === 0, 'no Pay button on an expired order');
  await shot(b, 'order-expired');

  step = 'expiry: the ticket is on sale again';
  await b.goto(ticketUrl);
  // The ticket's page looks again while the ticket is reserved; the release is an event.
  await visible(button(b, 'Purchase'));
  await shot(b, 'ticket-on-sale-again');
  await b.getByRole('link', { name: 'Ticketing' }).click();
  await visible(link(b, title));

  await sellerContext.close();
  await context.close();
}

// A stand-in for Stripe.js (the test has no internet): Stripe(key).elements().create('card')
// mounts a frame from js.stripe.com, as the real card form does, and createToken answers
// Stripe's test token.
const FAKE_STRIPE_JS = `
window.Stripe = function (key) {
  if (!/^pk_/.test(key)) throw new Error('not a publishable key: ' + key);
  window.fakeStripeKey = key;
  return {
    elements() {
      return {
        create(type) {
          return {
            mount(element) {
              const frame = document.createElement('iframe');
              frame.src = 'https://js.stripe.com/v3/fake-card-frame.html';
              frame.title = 'Secure card payment input frame';
              frame.style.border = '0';
              frame.style.height = '2.5rem';
              frame.style.width = '100%';
              element.append(frame);
            },
          };
        },
      };
    },
    async createToken() {
      return { token: { id: 'tok_visa' } };
    },
  };
};`;
const FAKE_CARD_FRAME = '<!doctype html><body style="margin:0;font:16px system-ui">'
  + '<input aria-label="Card number" value="4242 4242 4242 4242" style="width:100%;border:0"></body>';

async function runStripe(browser) {
  const unique = Date.now().toString(36);
  const title = `Opera ${unique}`;
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
  const stripeRequests = [];
  await context.route('https://js.stripe.com/**', (route) => {
    stripeRequests.push(route.request().url());
    const script = new URL(route.request().url()).pathname === '/v3/';
    return route.fulfill({
      contentType: script ? 'text/javascript' : 'text/html',
      body: script ? FAKE_STRIPE_JS : FAKE_CARD_FRAME,
    });
  });
  context.on('request', (request) => {
    const origin = new URL(request.url()).origin;
    if (origin !== new URL(STRIPE_URL).origin && origin !== 'https://js.stripe.com') {
      problems.push(`stripe buyer: a request went to ${request.url()}`);
    }
  });
  const b = await context.newPage();
  watch(b, 'stripe buyer');
  b.setDefaultTimeout(TIMEOUT);

  step = 'stripe: a ticket on sale, a buyer signed in';
  const api = context.request;
  let reply = await api.post(new URL('/api/users/signup', STRIPE_URL).href, {
    data: { email: `seller-${unique}@example.com`, password: 'seller-pass' },
  });
  check(reply.status() === 201, `signup: ${reply.status()}`);
  reply = await api.post(new URL('/api/tickets', STRIPE_URL).href, { data: { title, price: 42.5 } });
  check(reply.status() === 201, `sell: ${reply.status()}`);
  const ticket = await reply.json();
  reply = await api.post(new URL('/api/users/signup', STRIPE_URL).href, {
    data: { email: `buyer-${unique}@example.com`, password: 'buyer-pass' },
  });
  check(reply.status() === 201, `signup: ${reply.status()}`);

  step = 'stripe: the order page takes the card in Stripe\'s form';
  await b.goto(new URL(`/tickets/${ticket.id}`, STRIPE_URL).href);
  await button(b, 'Purchase').click();
  await b.waitForURL('**/orders/*');
  await visible(b.locator('iframe[title="Secure card payment input frame"]'));
  await visible(b.frameLocator('iframe').getByLabel('Card number'));
  check(await b.getByText('Test mode').count() === 0, 'no test-mode note with a publishable key');
  check(await b.evaluate(() => window.fakeStripeKey) === 'pk_test_browser', 'Stripe.js got the key');
  await shot(b, 'phone-order-stripe');

  step = 'stripe: pay with the token from Stripe.js';
  await button(b, 'Pay').click();
  await visible(b.getByText('Paid. The ticket is yours.'));
  check(stripeRequests.some((url) => url.endsWith('/v3/')), 'Stripe.js came from js.stripe.com');
  await context.close();
}

mkdirSync(SCREENSHOTS, { recursive: true });
const browser = await chromium.launch({
  executablePath: required('CHROMIUM'),
  headless: true,
  // No background traffic: the machine may have no network beyond loopback.
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  timeout: 120_000,
});
try {
  await run(browser);
  await runExpiry(browser);
  await runStripe(browser);
  check(problems.length === 0, `the pages reported problems:\n${problems.join('\n')}`);
  console.log(`browser journey passed (${shots} screenshots in ${SCREENSHOTS})`);
} catch (error) {
  console.error(`FAILED at step "${step}": ${error.stack ?? error}`);
  if (problems.length) console.error(`page problems:\n${problems.join('\n')}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
