// Akeneo Event Platform: each source's subscriber and its subscriptions with their state, as
// Akeneo's management API reports them; check, suspend and resume, each confirmed first.
import { html, useEffect, useState } from './vendor/preact-htm.js';
import { call, get, list, num, str } from './api.js';
import { ConfirmDialog, ErrorBox, stateClass } from './ui.js';

const ASKED_KEY = 'pimgate.console.platform';

function Findings({ check }) {
  return html`<div data-testid="platform-check">
    <p>${num(check, 'problems') ? `${num(check, 'problems')} problem(s)` : 'No problem found'}
      ${str(check, 'expected_destination') ? ` · expected destination ${str(check, 'expected_destination')}` : ''}</p>
    <ul class="findings">${list(check, 'findings').map((f, i) => html`<li key=${i}
      class=${`finding finding-${str(f, 'outcome').toLowerCase()}`}>
      <strong>${str(f, 'outcome')}</strong> ${str(f, 'check')}
      ${str(f, 'subscription_id') ? ` (${str(f, 'subscription_id')})` : ''}: ${str(f, 'detail')}
      ${str(f, 'fix') ? html`<br /><span class="muted">Fix: </span><code>${str(f, 'fix')}</code>` : null}
    </li>`)}</ul>
  </div>`;
}

function SourceSubscriptions({ source, onAsk, generation }) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [check, setCheck] = useState(null);
  useEffect(() => {
    call('ListPlatformSubscriptions', { source }).then(setData).catch(setError);
  }, [source, generation]);
  const runCheck = () => {
    setCheck(null);
    call('CheckPlatformSubscription', { source }).then(setCheck).catch(setError);
  };
  const subscriptions = list(data, 'subscriptions');
  return html`<section class="card" data-source=${source}>
    <h2>${source}</h2>
    <${ErrorBox} error=${error} />
    ${data && !subscriptions.length ? html`<p class="muted">No subscription.</p>` : null}
    ${subscriptions.length ? html`<table>
      <thead><tr><th>Subscription</th><th>Status</th><th>Destination</th><th>Events</th>
        <th>Delivers here</th><th>Updated</th><th></th></tr></thead>
      <tbody>${subscriptions.map((s) => {
        const id = str(s, 'id');
        const status = str(s, 'status');
        return html`<tr key=${id}>
          <td class="text">${id}</td>
          <td><span class=${stateClass(status)}>${status}</span></td>
          <td class="text">${str(s, 'url')}</td>
          <td class="text">${list(s, 'events').join(', ')}</td>
          <td>${get(s, 'delivers_to_source', false) ? 'yes' : 'no'}</td>
          <td>${str(s, 'updated_at')}</td>
          <td>
            ${status === 'active' ? html`<button type="button" onClick=${() => onAsk({
              title: `Suspend subscription ${id}?`,
              detail: 'Akeneo captures its events (up to 10 days) until it is resumed.',
              confirmLabel: 'Suspend',
              run: () => call('SuspendPlatformSubscription', { source, subscription_id: id }),
            })}>Suspend…</button>` : null}
            ${status === 'suspended' ? html`<button type="button" onClick=${() => onAsk({
              title: `Resume subscription ${id}?`,
              detail: 'Akeneo delivers again and replays what it captured while suspended.',
              confirmLabel: 'Resume',
              run: () => call('ResumePlatformSubscription', { source, subscription_id: id }),
            })}>Resume…</button>` : null}
          </td>
        </tr>`;
      })}</tbody></table>` : null}
    <button type="button" onClick=${runCheck}>Check against this pimgate</button>
    ${check ? html`<${Findings} check=${check} />` : null}
  </section>`;
}

export function PlatformPage() {
  const [subscribers, setSubscribers] = useState(null);
  const [error, setError] = useState(null);
  const [pending, setPending] = useState(null);
  const [generation, setGeneration] = useState(0);
  // Each view calls Akeneo's management API (and, without a `platform:` source, answers 409):
  // the first look in a session is asked for, later ones load by themselves.
  const [asked, setAsked] = useState(sessionStorage.getItem(ASKED_KEY) === '1');
  useEffect(() => {
    if (!asked) return;
    call('ListPlatformSubscribers', {})
      .then((r) => {
        sessionStorage.setItem(ASKED_KEY, '1');
        setSubscribers(list(r, 'subscribers'));
      })
      .catch(setError);
  }, [generation, asked]);
  const managed = (subscribers || []).filter((s) => get(s, 'managed', false));
  const sources = [...new Set((subscribers || []).map((s) => str(s, 'source')))];
  return html`<div data-testid="platform-page">
    <h1>Event Platform</h1>
    <p class="muted">Subscribers and subscriptions as Akeneo's management API reports them, for
      the sources with <code>platform:</code>.</p>
    ${asked ? null : html`<button type="button" data-testid="platform-load"
      onClick=${() => setAsked(true)}>Ask Akeneo</button>`}
    <${ErrorBox} error=${error} />
    ${subscribers && !subscribers.length
      ? html`<p class="muted" data-testid="no-platform">No source with <code>platform:</code> has a
        subscriber yet (see docs/migrate-to-event-platform.md).</p>`
      : null}
    ${subscribers && subscribers.length ? html`<table data-testid="subscribers">
      <thead><tr><th>Source</th><th>Subscriber</th><th>Name</th><th>Status</th><th>Email</th>
        <th>Source's own</th></tr></thead>
      <tbody>${subscribers.map((s) => html`<tr key=${`${str(s, 'source')}/${str(s, 'id')}`}>
        <td>${str(s, 'source')}</td><td class="text">${str(s, 'id')}</td><td class="text">${str(s, 'name')}</td>
        <td><span class=${stateClass(str(s, 'status'))}>${str(s, 'status')}</span></td>
        <td class="text">${str(s, 'technical_email')}</td><td>${get(s, 'managed', false) ? 'yes' : ''}</td>
      </tr>`)}</tbody></table>` : null}
    ${(managed.length ? [...new Set(managed.map((s) => str(s, 'source')))] : sources).map(
      (source) => html`<${SourceSubscriptions} key=${source} source=${source} generation=${generation}
        onAsk=${setPending} />`,
    )}
    <${ConfirmDialog} pending=${pending} onClose=${() => {
      setPending(null);
      setGeneration((g) => g + 1);
    }} />
  </div>`;
}
