// Dead letters of one plugin: filters (applied by pimgate while it pages, so that they see every
// letter, not only those loaded), the event and its last error, retry or purge one, the selected
// ones or all, each confirmed first.
import { html, useEffect, useRef, useState } from './vendor/preact-htm.js';
import { call, get, list, num, str } from './api.js';
import { ConfirmDialog, ErrorBox, JsonView, fmtInt, fmtTime } from './ui.js';

const PAGE_SIZE = 100;
// Filters typed in are applied once typing pauses this long (or at once with Enter / Apply).
const DEBOUNCE_MS = 400;
const NO_FILTERS = { type: '', resource: '', kind: '', reason: '' };
const KINDS = { rejected: 'DEAD_LETTER_KIND_REJECTED', exhausted: 'DEAD_LETTER_KIND_EXHAUSTED' };

// The ListDeadLetters request for these filters: only the ones set.
function requestOf(plugin, filters, pageToken) {
  const request = { plugin, page_size: PAGE_SIZE, page_token: pageToken || '' };
  if (filters.type) request.type = filters.type.trim();
  if (filters.resource) request.resource_id = filters.resource;
  if (KINDS[filters.kind]) request.kind = KINDS[filters.kind];
  if (filters.reason) request.reason_contains = filters.reason;
  return request;
}

const filtered = (filters) => Object.values(filters).some((v) => v !== '');
const sameFilters = (a, b) => Object.keys(NO_FILTERS).every((k) => a[k] === b[k]);

export function DeadLettersPage({ plugin }) {
  const [plugins, setPlugins] = useState([]);
  const [letters, setLetters] = useState([]);
  const [nextToken, setNextToken] = useState('');
  const [scanned, setScanned] = useState(0);
  const [loaded, setLoaded] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  // `form` is what is typed; `filters` what the letters shown were searched with.
  const [form, setForm] = useState(NO_FILTERS);
  const [filters, setFilters] = useState(NO_FILTERS);
  const [selected, setSelected] = useState(new Set());
  const [open, setOpen] = useState(null);
  const [pending, setPending] = useState(null);
  const [done, setDone] = useState('');
  const [generation, setGeneration] = useState(0);
  // Answers to a search that has since been replaced (other filters, plugin) are dropped.
  const searchId = useRef(0);

  useEffect(() => {
    call('ListPlugins')
      .then((r) => setPlugins(list(r, 'plugins').map((p) => str(p, 'name'))))
      .catch(setError);
  }, []);
  useEffect(() => {
    if (!plugin && plugins.length) window.location.hash = `#/dead-letters?plugin=${encodeURIComponent(plugins[0])}`;
  }, [plugin, plugins]);

  const load = async (pageToken, append) => {
    const id = append ? searchId.current : ++searchId.current;
    setBusy(true);
    try {
      const r = await call('ListDeadLetters', requestOf(plugin, filters, pageToken));
      if (id !== searchId.current) return;
      setLetters((old) => (append ? [...old, ...list(r, 'dead_letters')] : list(r, 'dead_letters')));
      setNextToken(str(r, 'next_page_token'));
      setScanned((s) => (append ? s : 0) + num(r, 'scanned'));
      setError(null);
    } catch (e) {
      if (id !== searchId.current) return;
      if (!append) {
        setLetters([]);
        setNextToken('');
        setScanned(0);
      }
      setError(e);
    }
    setBusy(false);
    setLoaded(true);
  };
  useEffect(() => {
    setLoaded(false);
    setSelected(new Set());
    setOpen(null);
    if (plugin) load('', false);
  }, [plugin, generation, filters]);
  // Typing applies the filters once it pauses.
  useEffect(() => {
    if (sameFilters(form, filters)) return undefined;
    const timer = setTimeout(() => setFilters((f) => (sameFilters(f, form) ? f : form)), DEBOUNCE_MS);
    return () => clearTimeout(timer);
  }, [form]);

  const shown = letters;
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
    const what = all
      ? `every dead letter of ${plugin}${filtered(filters) ? ' (not only those the filters show)' : ''}`
      : `${sequences.length} dead letter(s) (sequence ${sequences.join(', ')})`;
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
  const setFilter = (key) => (e) => setForm({ ...form, [key]: e.target.value });
  const apply = (e) => {
    e.preventDefault();
    if (sameFilters(form, filters)) setGeneration((g) => g + 1);
    else setFilters(form);
  };
  const chosen = [...selected];

  return html`<div data-testid="dead-letters-page">
    <h1>Dead letters</h1>
    <form class="filters" data-testid="dead-letter-filters" onSubmit=${apply}>
      <label>Plugin
        <select data-testid="plugin-select" value=${plugin}
          onChange=${(e) => (window.location.hash = `#/dead-letters?plugin=${encodeURIComponent(e.target.value)}`)}>
          ${plugins.map((p) => html`<option key=${p} value=${p}>${p}</option>`)}
        </select></label>
      <label>Type <input name="type" placeholder="product.*" value=${form.type} onInput=${setFilter('type')} /></label>
      <label>Resource <input name="resource" value=${form.resource} onInput=${setFilter('resource')} /></label>
      <label>Kind
        <select name="kind" value=${form.kind} onChange=${setFilter('kind')}>
          <option value="">any</option><option value="rejected">rejected</option>
          <option value="exhausted">retries exhausted</option>
        </select></label>
      <label>Reason contains <input name="reason" value=${form.reason} onInput=${setFilter('reason')} /></label>
      <button type="submit" data-testid="apply-filters">Apply</button>
      <button type="button" data-testid="refresh" onClick=${() => setGeneration((g) => g + 1)}>Refresh</button>
    </form>
    <${ErrorBox} error=${error} />
    ${done ? html`<p class="ok" data-testid="action-result">${done}</p>` : null}
    <div class="actions">
      <button type="button" data-testid="retry-selected" disabled=${!chosen.length}
        onClick=${() => act('Retry', 'RetryDeadLetters', chosen)}>Retry selected (${chosen.length})</button>
      <button type="button" data-testid="retry-all" disabled=${!letters.length && !filtered(filters)}
        onClick=${() => act('Retry', 'RetryDeadLetters', 'all')}>Retry all</button>
      <button type="button" class="danger" data-testid="purge-selected" disabled=${!chosen.length}
        onClick=${() => act('Purge', 'PurgeDeadLetters', chosen)}>Purge selected</button>
      <button type="button" class="danger" data-testid="purge-all" disabled=${!letters.length && !filtered(filters)}
        onClick=${() => act('Purge', 'PurgeDeadLetters', 'all')}>Purge all</button>
    </div>
    ${loaded && !shown.length && !nextToken && !error
      ? html`<p class="muted" data-testid="no-dead-letters">No dead letters${filtered(filters) ? ' match the filters' : ''}.</p>`
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
    ${loaded && filtered(filters) ? html`<p class="muted" data-testid="dead-letters-searched">
      ${shown.length ? `${fmtInt(shown.length)} found` : 'None found yet'} in ${fmtInt(scanned)} letters searched${nextToken ? ', more remain' : ''}.</p>` : null}
    ${nextToken ? html`<button type="button" data-testid="load-more" disabled=${busy}
      onClick=${() => load(nextToken, true)}>${shown.length ? 'Load more' : 'Search further'}</button>` : null}
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
