// Sign up, sign in, sign out.

import { api } from './api.js';
import { busy, errorBox, field, h, nextPath, render, showErrors } from './dom.js';

/** The sign-up and sign-in forms differ only in wording and endpoint. */
function credentialsPage({ title, action, endpoint, passwordAutocomplete, other }) {
  return ({ main }) => {
    const email = field('email', 'Email', { type: 'email', autocomplete: 'email', required: true });
    const password = field('password', 'Password', {
      type: 'password', autocomplete: passwordAutocomplete, required: true,
    });
    const errors = errorBox();
    const submit = h('button', { type: 'submit' }, action);
    const form = h('form', { novalidate: true, class: 'card form' },
      errors.element, email.element, password.element, submit);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      errors.clear();
      await busy(submit, `${action}…`, async () => {
        try {
          await api('POST', endpoint, { email: email.input.value, password: password.input.value });
          location.assign(nextPath('/'));
        } catch (error) {
          showErrors(error, [email, password], errors);
        }
      });
    });
    render(main, title, h('h1', {}, title), form, other);
    email.input.focus();
  };
}

export const signUpPage = credentialsPage({
  title: 'Sign up',
  action: 'Sign Up',
  endpoint: '/api/users/signup',
  passwordAutocomplete: 'new-password',
  other: h('p', { class: 'aside' }, 'Already have an account? ', h('a', { href: '/auth/signin' }, 'Go to sign-in'), '.'),
});

export const signInPage = credentialsPage({
  title: 'Sign in',
  action: 'Sign In',
  endpoint: '/api/users/signin',
  passwordAutocomplete: 'current-password',
  other: h('p', { class: 'aside' }, 'New here? ', h('a', { href: '/auth/signup' }, 'Create an account'), '.'),
});

export async function signOutPage({ main }) {
  const errors = errorBox();
  render(main, 'Signing out', h('h1', {}, 'Signing out…'), errors.element);
  try {
    await api('POST', '/api/users/signout', {});
    location.replace('/');
  } catch (error) {
    errors.show(error.errors);
  }
}
