// Events: search the log by type glob, resource, source and time range; one event's JSON. Event
// data comes from whoever sent the webhook: it is only ever rendered as text.
import { html, useEffect, useState } from './vendor/preact-htm.js';
import { call, get, list, num, str } from './api.js';
import { ErrorBox, JsonView, fmtInt, fmtTime, inputToRfc3339 } from './ui.js';

const PAGE_SIZE = 50;
const FIELDS = ['type', 'resource_id', 'source', 'since', 'until', 'newest_first'];

function requestOf(form, pageToken) {
  const request = { page_size: PAGE_SIZE, page_token: pageToken || '' };
  if (form.type) request.type = form.type;
  if (form.resource_id) request.resource_id = form.resource_id;
  if (form.source) request.source = form.source;
  const since = inputToRfc3339(form.since);
  const until = inputToRfc3339(form.until);
  if (since) request.since = since;
  if (until) request.until = until;
  if (form.newest_first === '1') request.newest_first = true;
  return request;
}

export function EventsPage({ query }) {
  const initial = Object.fromEntries(FIELDS.map((f) => [f, query.get(f) || '']));
  if (!query.toString()) initial.newest_first = '1';
  const [form, setForm] = useState(initial);
  const [events, setEvents] = useState(null);
  const [nextToken, setNextToken] = useState('');
  const [scanned, setScanned] = useState(0);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [lookup, setLookup] = useState('');
  const key = query.toString();

  const search = async (pageToken, append) => {
    setBusy(true);
    try {
      const r = await call('ListEvents', requestOf(initial, pageToken));
      setEvents((old) => (append && old ? [...old, ...list(r, 'events')] : list(r, 'events')));
      setNextToken(str(r, 'next_page_token'));
      setScanned((s) => (append ? s : 0) + num(r, 'scanned'));
      setError(null);
    } catch (e) {
      setError(e);
    }
    setBusy(false);
  };
  useEffect(() => {
    setForm(initial);
    search('', false);
  }, [key]);

  const submit = (e) => {
    e.preventDefault();
    const params = new URLSearchParams();
    for (const f of FIELDS) if (form[f]) params.set(f, form[f]);
    if (form.newest_first !== '1') params.set('newest_first', '0');
    window.location.hash = `#/events?${params}`;
  };
  const set = (field) => (e) => setForm({ ...form, [field]: e.target.value });
  const open = (e) => {
    e.preventDefault();
    if (/^\d+$/.test(lookup.trim())) window.location.hash = `#/event/${lookup.trim()}`;
  };

  return html`<div data-testid="events-page">
    <h1>Events</h1>
    <form class="filters" onSubmit=${submit} data-testid="events-form">
      <label>Type <input name="type" placeholder="product.*" value=${form.type} onInput=${set('type')} /></label>
      <label>Resource <input name="resource_id" value=${form.resource_id} onInput=${set('resource_id')} /></label>
      <label>Source <input name="source" value=${form.source} onInput=${set('source')} /></label>
      <label>Since (UTC) <input name="since" type="datetime-local" step="1" value=${form.since} onInput=${set('since')} /></label>
      <label>Until (UTC) <input name="until" type="datetime-local" step="1" value=${form.until} onInput=${set('until')} /></label>
      <label>Order
        <select name="newest_first" value=${form.newest_first} onChange=${set('newest_first')}>
          <option value="1">newest first</option><option value="">oldest first</option>
        </select></label>
      <button type="submit" disabled=${busy}>Search</button>
    </form>
    <form class="inline" onSubmit=${open}>
      <label for="lookup">Sequence</label>
      <input id="lookup" inputmode="numeric" value=${lookup} onInput=${(e) => setLookup(e.target.value)} />
      <button type="submit">Open</button>
    </form>
    <${ErrorBox} error=${error} />
    ${events && !events.length ? html`<p class="muted" data-testid="no-events">No event matches
      ${nextToken ? ` in the first ${fmtInt(scanned)} looked at` : ''}.</p>` : null}
    ${events && events.length ? html`<table data-testid="events">
      <thead><tr><th class="num">Sequence</th><th>Type</th><th>Resource</th><th>Source</th>
        <th>Author</th><th>Received</th><th>Flags</th></tr></thead>
      <tbody>${events.map((event) => {
        const seq = String(get(event, 'sequence', '0'));
        return html`<tr key=${seq} data-sequence=${seq}>
          <td class="num"><a href=${`#/event/${seq}`}>${seq}</a></td>
          <td>${str(event, 'type')}</td>
          <td class="text">${str(event, 'resource_id')}</td>
          <td>${str(event, 'source')}</td>
          <td class="text">${str(event, 'author')}</td>
          <td>${fmtTime(get(event, 'received_at'))}</td>
          <td>${get(event, 'stale', false) ? 'stale' : ''}</td>
        </tr>`;
      })}</tbody></table>` : null}
    ${nextToken ? html`<button type="button" disabled=${busy} onClick=${() => search(nextToken, true)}>
      Load more</button> <span class="muted">${fmtInt(scanned)} events looked at</span>` : null}
  </div>`;
}

export function EventPage({ sequence }) {
  const [event, setEvent] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    setEvent(null);
    setError(null);
    call('GetEvent', { sequence })
      .then(setEvent)
      .catch(setError);
  }, [sequence]);
  return html`<div data-testid="event-page">
    <h1>Event ${sequence}</h1>
    <${ErrorBox} error=${error} />
    ${event ? html`<dl class="figures">
      <dt>Type</dt><dd>${str(event, 'type')}</dd>
      <dt>Resource</dt><dd class="text">${str(event, 'resource_id')}</dd>
      <dt>Source</dt><dd>${str(event, 'source')} (id <span class="text">${str(event, 'id')}</span>)</dd>
      <dt>Received</dt><dd>${fmtTime(get(event, 'received_at'))}</dd>
      <dt>Occurred</dt><dd>${fmtTime(get(event, 'occurred_at'))}</dd>
    </dl>
    <${JsonView} value=${event} />` : null}
  </div>`;
}
