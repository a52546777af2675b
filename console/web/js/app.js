// The console's entry point: login, navigation (#/page routes) and the page shown.
import { html, render, useEffect, useState } from './vendor/preact-htm.js';
import { call, clearToken, onUnauthorized, setToken, token } from './api.js';
import { ErrorBox } from './ui.js';
import { OverviewPage } from './overview.js';
import { PluginPage } from './plugin.js';
import { DeadLettersPage } from './dead_letters.js';
import { EventPage, EventsPage } from './events.js';
import { QuarantinePage } from './quarantine.js';
import { ReconciliationPage } from './reconciliation.js';
import { PlatformPage } from './platform.js';

const NAV = [
  ['overview', 'Overview'],
  ['dead-letters', 'Dead letters'],
  ['events', 'Events'],
  ['quarantine', 'Quarantine'],
  ['reconciliation', 'Reconciliation'],
  ['platform', 'Event Platform'],
];

// "#/plugin/name?x=1" -> {page: 'plugin', arg: 'name', query: URLSearchParams}
function parseRoute() {
  const hash = window.location.hash.replace(/^#\/?/, '');
  const [path, search = ''] = hash.split('?');
  const [page, ...rest] = path.split('/');
  return {
    page: page || 'overview',
    arg: rest.length ? decodeURIComponent(rest.join('/')) : '',
    query: new URLSearchParams(search),
  };
}

function useRoute() {
  const [route, setRoute] = useState(parseRoute());
  useEffect(() => {
    const changed = () => setRoute(parseRoute());
    window.addEventListener('hashchange', changed);
    return () => window.removeEventListener('hashchange', changed);
  }, []);
  return route;
}

function LoginPage({ onLogin, refused }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState(refused);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await call('GetStats', {}, value);  // checks the token before keeping it
      setToken(value);
      onLogin();
    } catch (err) {
      setError(
        err.status === 401
          ? { message: 'The token was refused.' }
          : { code: err.code, message: err.message },
      );
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="login">
    <form onSubmit=${submit} data-testid="login-form">
      <h1>pimgate console</h1>
      <p class="muted">Enter the admin token (<code>admin.token</code>). It is kept in this tab
        only and sent with each request.</p>
      <label for="token">Admin token</label>
      <input id="token" name="token" type="password" autocomplete="current-password"
        value=${value} onInput=${(e) => setValue(e.target.value)} autofocus />
      <${ErrorBox} error=${error} />
      <button type="submit" disabled=${busy}>${busy ? 'Checking…' : 'Log in'}</button>
    </form>
  </main>`;
}

function Page({ route }) {
  switch (route.page) {
    case 'overview':
      return html`<${OverviewPage} />`;
    case 'plugin':
      return html`<${PluginPage} name=${route.arg} />`;
    case 'dead-letters':
      return html`<${DeadLettersPage} plugin=${route.query.get('plugin') || ''} />`;
    case 'events':
      return html`<${EventsPage} query=${route.query} />`;
    case 'event':
      return html`<${EventPage} sequence=${route.arg} />`;
    case 'quarantine':
      return html`<${QuarantinePage} />`;
    case 'reconciliation':
      return html`<${ReconciliationPage} />`;
    case 'platform':
      return html`<${PlatformPage} />`;
    default:
      return html`<p class="error">No page "${route.page}".</p>`;
  }
}

function App() {
  const [loggedIn, setLoggedIn] = useState(token() !== null);
  const [refused, setRefused] = useState(null);
  const route = useRoute();
  useEffect(
    () =>
      onUnauthorized(() => {
        clearToken();
        setRefused({ message: 'The token was refused: log in again.' });
        setLoggedIn(false);
      }),
    [],
  );
  if (!loggedIn) {
    return html`<${LoginPage} refused=${refused} onLogin=${() => {
      setRefused(null);
      setLoggedIn(true);
    }} />`;
  }
  const logout = () => {
    clearToken();
    setLoggedIn(false);
  };
  const current = route.page === 'plugin' || route.page === 'event' ? '' : route.page;
  return html`<div class="layout">
    <header>
      <span class="brand">pimgate</span>
      <nav>
        ${NAV.map(
          ([page, label]) =>
            html`<a key=${page} href=${`#/${page}`} class=${page === current ? 'active' : ''}
              data-nav=${page}>${label}</a>`,
        )}
      </nav>
      <button type="button" class="link" onClick=${logout}>Log out</button>
    </header>
    <main><${Page} route=${route} /></main>
  </div>`;
}

render(html`<${App} />`, document.getElementById('app'));
