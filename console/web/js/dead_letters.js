// Dead letters of one plugin: filters, the event and its last error, retry or purge one, the
// selected ones or all, each confirmed first.
import { html, useEffect, useState } from './vendor/preact-htm.js';
import { call, get, list, num, str } from './api.js';
import { ConfirmDialog, ErrorBox, JsonView, fmtTime } from './ui.js';

const PAGE_SIZE = 100;

// A glob over the canonical type ("product.*") as a RegExp.
function globRegExp(glob) {
  const escaped = glob.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*');
  return new RegExp(`^${escaped}$`);
}

function matches(letter, filters) {
  const event = get(letter, 'event', {});
  if (filters.type && !globRegExp(filters.type).test(str(event, 'type'))) return false;
  if (filters.resource && str(event, 'resource_id') !== filters.resource) return false;
  if (filters.kind === 'rejected' && !get(letter, 'rejected', false)) return false;
  if (filters.kind === 'exhausted' && get(letter, 'rejected', false)) return false;
  if (filters.reason && !str(letter, 'reason').toLowerCase().includes(filters.reason.toLowerCase())) {
    return false;
  }
  return true;
}

export function DeadLettersPage({ plugin }) {
  const [plugins, setPlugins] = useState([]);
  const [letters, setLetters] = useState([]);
  const [nextToken, setNextToken] = useState('');
  const [loaded, setLoaded] = useState(false);
  const [error, setError] = useState(null);
  const [filters, setFilters] = useState({ type: '', resource: '', kind: '', reason: '' });
  const [selected, setSelected] = useState(new Set());
  const [open, setOpen] = useState(null);
  const [pending, setPending] = useState(null);
  const [done, setDone] = useState('');
  const [generation, setGeneration] = useState(0);

  useEffect(() => {
    call('ListPlugins')
      .then((r) => setPlugins(list(r, 'plugins').map((p) => str(p, 'name'))))
      .catch(setError);
  }, []);
  useEffect(() => {
    if (!plugin && plugins.length) window.location.hash = `#/dead-letters?plugin=${encodeURIComponent(plugins[0])}`;
  }, [plugin, plugins]);

  const load = async (pageToken, append) => {
    try {
      const r = await call('ListDeadLetters', { plugin, page_size: PAGE_SIZE, page_token: pageToken });
      setLetters((old) => (append ? [...old, ...list(r, 'dead_letters')] : list(r, 'dead_letters')));
      setNextToken(str(r, 'next_page_token'));
      setError(null);
    } catch (e) {
      setError(e);
    }
    setLoaded(true);
  };
  useEffect(() => {
    setLoaded(false);
    setSelected(new Set());
    setOpen(null);
    if (plugin) load('', false);
  }, [plugin, generation]);

  const shown = letters.filter((l) => matches(l, filters));
  const sequenceOf = (l) => String(get(get(l, 'event', {}), 'sequence', '0'));
  const toggle = (seq) => {
    const next = new Set(selected);
    if (next.has(seq)) next.delete(seq);
    else next.add(seq);
    setSelected(next);
  };
  const act = (verb, method, which) => {
    const all = which === 'all';
    const sequences = all ? [] : which;
    const what = all ? `every dead letter of ${plugin}` : `${sequences.length} dead letter(s) (sequence ${sequences.join(', ')})`;
    const detail = method === 'RetryDeadLetters'
      ? `${what} go back to the plugin from attempt 1; one that fails again is dead-lettered again.`
      : `${what} are removed without being delivered. This cannot be undone.`;
    setPending({
      title: `${verb} ${all ? 'all dead letters' : `${sequences.length} dead letter(s)`}?`,
      detail,
      confirmLabel: verb,
      run: async () => {
        const r = await call(method, { plugin, all, sequences });
        setDone(method === 'RetryDeadLetters'
          ? `Handed back to ${plugin}: ${list(r, 'sequences').join(', ') || 'none'}` +
            (get(r, 'more', false) ? ' (more remain: retry all again)' : '')
          : `Purged ${num(r, 'purged')}`);
      },
    });
  };
  const setFilter = (key) => (e) => setFilters({ ...filters, [key]: e.target.value });
  const chosen = [...selected];

  return html`<div data-testid="dead-letters-page">
    <h1>Dead letters</h1>
    <form class="filters" onSubmit=${(e) => e.preventDefault()}>
      <label>Plugin
        <select data-testid="plugin-select" value=${plugin}
          onChange=${(e) => (window.location.hash = `#/dead-letters?plugin=${encodeURIComponent(e.target.value)}`)}>
          ${plugins.map((p) => html`<option key=${p} value=${p}>${p}</option>`)}
        </select></label>
      <label>Type <input placeholder="product.*" value=${filters.type} onInput=${setFilter('type')} /></label>
      <label>Resource <input value=${filters.resource} onInput=${setFilter('resource')} /></label>
      <label>Kind
        <select value=${filters.kind} onChange=${setFilter('kind')}>
          <option value="">any</option><option value="rejected">rejected</option>
          <option value="exhausted">retries exhausted</option>
        </select></label>
      <label>Reason contains <input value=${filters.reason} onInput=${setFilter('reason')} /></label>
      <button type="button" data-testid="refresh" onClick=${() => setGeneration((g) => g + 1)}>Refresh</button>
    </form>
    <${ErrorBox} error=${error} />
    ${done ? html`<p class="ok" data-testid="action-result">${done}</p>` : null}
    <div class="actions">
      <button type="button" data-testid="retry-selected" disabled=${!chosen.length}
        onClick=${() => act('Retry', 'RetryDeadLetters', chosen)}>Retry selected (${chosen.length})</button>
      <button type="button" data-testid="retry-all" disabled=${!letters.length}
        onClick=${() => act('Retry', 'RetryDeadLetters', 'all')}>Retry all</button>
      <button type="button" class="danger" data-testid="purge-selected" disabled=${!chosen.length}
        onClick=${() => act('Purge', 'PurgeDeadLetters', chosen)}>Purge selected</button>
      <button type="button" class="danger" data-testid="purge-all" disabled=${!letters.length}
        onClick=${() => act('Purge', 'PurgeDeadLetters', 'all')}>Purge all</button>
    </div>
    ${loaded && !shown.length
      ? html`<p class="muted" data-testid="no-dead-letters">No dead letters${letters.length ? ' match the filters' : ''}.</p>`
      : null}
    ${shown.length ? html`<table data-testid="dead-letters">
      <thead><tr><th></th><th class="num">Sequence</th><th>Type</th><th>Resource</th><th>Source</th>
        <th class="num">Attempts</th><th>Last error</th><th>Dead since</th></tr></thead>
      <tbody>
        ${shown.map((letter) => {
          const event = get(letter, 'event', {});
          const seq = sequenceOf(letter);
          return html`<tr key=${seq} data-sequence=${seq} class=${open === seq ? 'open' : ''}>
              <td><input type="checkbox" aria-label=${`select ${seq}`} checked=${selected.has(seq)}
                onChange=${() => toggle(seq)} /></td>
              <td class="num"><button type="button" class="link" onClick=${() => setOpen(open === seq ? null : seq)}>${seq}</button></td>
              <td>${str(event, 'type')}</td>
              <td class="text">${str(event, 'resource_id')}</td>
              <td>${str(event, 'source')}</td>
              <td class="num">${num(letter, 'attempts')}</td>
              <td class="text">${str(letter, 'reason')}</td>
              <td>${fmtTime(get(letter, 'dead_at'))}</td>
            </tr>`;
        })}
      </tbody></table>` : null}
    ${nextToken ? html`<button type="button" onClick=${() => load(nextToken, true)}>Load more</button>` : null}
    ${open ? (() => {
      const letter = letters.find((l) => sequenceOf(l) === open);
      return letter ? html`<section class="card" data-testid="dead-letter-detail">
        <h2>Sequence ${open}</h2>
        <p class="text"><strong>Last error:</strong> ${str(letter, 'reason')}</p>
        <${JsonView} value=${get(letter, 'event', {})} />
      </section>` : null;
    })() : null}
    <${ConfirmDialog} pending=${pending} onClose=${() => {
      setPending(null);
      setGeneration((g) => g + 1);
    }} />
  </div>`;
}
