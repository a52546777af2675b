// Quarantine: legacy batch elements the parser refused, with the reason and the element as sent.
import { html, useEffect, useState } from './vendor/preact-htm.js';
import { call, get, list, num, str } from './api.js';
import { ErrorBox, fmtTime } from './ui.js';

const PAGE_SIZE = 50;

// `raw` is bytes (base64 in protobuf JSON): the element's JSON, shown as text.
function rawText(entry) {
  const raw = str(entry, 'raw');
  try {
    const bytes = Uint8Array.from(atob(raw), (c) => c.charCodeAt(0));
    return new TextDecoder().decode(bytes);
  } catch {
    return raw;
  }
}

export function QuarantinePage() {
  const [entries, setEntries] = useState(null);
  const [nextToken, setNextToken] = useState('');
  const [error, setError] = useState(null);
  const load = async (pageToken) => {
    try {
      const r = await call('ListQuarantine', { page_size: PAGE_SIZE, page_token: pageToken });
      setEntries((old) => [...(pageToken ? old || [] : []), ...list(r, 'entries')]);
      setNextToken(str(r, 'next_page_token'));
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => {
    load('');
  }, []);
  return html`<div data-testid="quarantine-page">
    <h1>Quarantine</h1>
    <p class="muted">Elements of legacy webhook batches that could not be read as events, oldest
      first, kept as received.</p>
    <${ErrorBox} error=${error} />
    ${entries && !entries.length ? html`<p class="muted" data-testid="no-quarantine">Nothing is quarantined.</p>` : null}
    ${(entries || []).map((entry) => html`<section class="card" key=${str(entry, 'id')} data-testid="quarantine-entry">
      <h2>#${str(entry, 'id')} · ${str(entry, 'source')} · element ${num(entry, 'index')}</h2>
      <dl class="figures">
        <dt>Received</dt><dd>${fmtTime(get(entry, 'received_at'))}</dd>
        <dt>Reason</dt><dd class="text" data-field="reason">${str(entry, 'reason')}</dd>
        <dt>Request id</dt><dd class="text">${str(entry, 'request_id')}</dd>
      </dl>
      <pre class="json" data-field="raw">${rawText(entry)}</pre>
    </section>`)}
    ${nextToken ? html`<button type="button" onClick=${() => load(nextToken)}>Load more</button>` : null}
  </div>`;
}
