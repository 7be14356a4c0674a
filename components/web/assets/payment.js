// How an order is paid for: with Stripe's own card form when the site has a Stripe
// publishable key (Stripe.js is loaded from Stripe then, and only then), else in test mode
// with Stripe's test card token, which the payments service accepts without a secret key.

import { h } from './dom.js';

const STRIPE_JS = 'https://js.stripe.com/v3/';

function publishableKey() {
  return document.querySelector('meta[name="stripe-publishable-key"]')?.content || null;
}

function loadStripeJs() {
  if (window.Stripe) return Promise.resolve(window.Stripe);
  return new Promise((resolve, reject) => {
    const script = h('script', { src: STRIPE_JS });
    script.addEventListener('load', () => resolve(window.Stripe));
    script.addEventListener('error', () => reject(new Error('Stripe’s card form could not be loaded. Please try again later.')));
    document.head.append(script);
  });
}

/**
 * Puts the means of payment into `container`; resolves to `{ token() }`, where `token()`
 * resolves to the token to send to POST /api/payments (or throws with a message).
 */
export async function paymentMethod(container) {
  const key = publishableKey();
  if (!key) {
    container.replaceChildren(h('p', { class: 'note test-mode' },
      'Test mode: no card is charged. Paying uses Stripe’s test card (tok_visa).'));
    return { token: async () => 'tok_visa' };
  }
  const mount = h('div', { class: 'card-element' });
  container.replaceChildren(h('p', { class: 'label' }, 'Card'), mount);
  const Stripe = await loadStripeJs();
  const stripe = Stripe(key);
  const card = stripe.elements().create('card');
  card.mount(mount);
  return {
    async token() {
      const { token, error } = await stripe.createToken(card);
      if (error) throw new Error(error.message);
      return token.id;
    },
  };
}
