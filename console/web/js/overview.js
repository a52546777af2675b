// Overview: the log, every source's ingest and answers, every plugin's delivery, refreshed by
// polling GetStats and ListPlugins; sparklines of the rates over the last samples.
import { html, useEffect, useRef, useState } from './vendor/preact-htm.js';
import { call, get, list, num, str } from './api.js';
import {
  Codes, ErrorBox, Sparkline, fmtBytes, fmtInt, fmtRate, fmtTime, stateClass,
} from './ui.js';

export const REFRESH_MS = 2000;
const HISTORY = 60;  // samples kept for the sparklines (2 minutes)

// The received time of one event (the head's, the oldest's), read again only when the sequence
// changes.
function useEventTime(sequence) {
  const [time, setTime] = useState(null);
  useEffect(() => {
    let stopped = false;
    setTime(null);
    if (sequence > 0) {
      call('GetEvent', { sequence: String(sequence) })
        .then((event) => !stopped && setTime(get(event, 'received_at')))
        .catch(() => {});  // retention may have removed it meanwhile: the time stays unknown
    }
    return () => {
      stopped = true;
    };
  }, [sequence]);
  return time;
}

// Keeps the last HISTORY samples of stats; rates are per-second differences between samples.
function useStatsHistory() {
  const [state, setState] = useState({ samples: [], plugins: null, error: null });
  const samplesRef = useRef([]);
  useEffect(() => {
    let stopped = false;
    let timer = null;
    const poll = async () => {
      try {
        const [stats, plugins] = await Promise.all([call('GetStats'), call('ListPlugins')]);
        if (stopped) return;
        const at = Date.parse(get(stats, 'taken_at')) || Date.now();
        samplesRef.current = [...samplesRef.current, { at, stats }].slice(-HISTORY);
        setState({ samples: samplesRef.current, plugins, error: null });
      } catch (e) {
        if (!stopped) setState((s) => ({ ...s, error: e }));
      }
      if (!stopped) timer = setTimeout(poll, REFRESH_MS);
    };
    poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, []);
  return state;
}

// Per-second rates of one counter between consecutive samples.
function rates(samples, pick) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i].at - samples[i - 1].at) / 1000;
    const dv = pick(samples[i].stats) - pick(samples[i - 1].stats);
    out.push(dt > 0 && dv >= 0 ? dv / dt : 0);
  }
  return out;
}

function byName(items, name) {
  return items.find((item) => str(item, 'name') === name);
}

function LogCard({ log }) {
  const head = num(log, 'head_sequence');
  const first = num(log, 'first_sequence');
  const headTime = useEventTime(head);
  const firstTime = useEventTime(first);
  return html`<section class="card" data-testid="log">
    <h2>Log</h2>
    <dl class="figures">
      <dt>Head sequence</dt><dd data-testid="head-sequence">${fmtInt(head)}</dd>
      <dt>Newest event received</dt><dd>${fmtTime(headTime)}</dd>
      <dt>Oldest sequence</dt><dd data-testid="first-sequence">${fmtInt(first)}</dd>
      <dt>Oldest event received</dt><dd>${fmtTime(firstTime)}</dd>
      <dt>Events stored</dt><dd data-testid="event-count">${fmtInt(num(log, 'event_count'))}</dd>
      <dt>Disk</dt><dd data-testid="disk">${fmtBytes(num(log, 'disk_bytes'))}</dd>
      <dt>Requests waiting for the writer</dt><dd>${fmtInt(num(log, 'pending_requests'))}</dd>
    </dl>
  </section>`;
}

function SourcesCard({ samples }) {
  const latest = samples[samples.length - 1].stats;
  const sources = list(latest, 'sources');
  const gateway = get(latest, 'gateway', {});
  return html`<section class="card">
    <h2>Sources</h2>
    <table data-testid="sources">
      <thead><tr>
        <th>Source</th><th>Ingest rate</th><th></th><th class="num">Accepted</th>
        <th class="num">Duplicates</th><th class="num">Stale</th><th class="num">Quarantined</th>
        <th>Answers</th>
      </tr></thead>
      <tbody>
        ${sources.map((source) => {
          const name = str(source, 'name');
          const series = rates(samples, (s) => num(byName(list(s, 'sources'), name), 'events_accepted'));
          return html`<tr key=${name} data-source=${name}>
            <td>${name}</td>
            <td class="num">${fmtRate(series.length ? series[series.length - 1] : 0)}</td>
            <td><${Sparkline} points=${series} label=${`ingest rate of ${name}`} /></td>
            <td class="num" data-field="accepted">${fmtInt(num(source, 'events_accepted'))}</td>
            <td class="num">${fmtInt(num(source, 'duplicates'))}</td>
            <td class="num">${fmtInt(num(source, 'stale'))}</td>
            <td class="num">${fmtInt(num(source, 'quarantined'))}</td>
            <td data-field="codes"><${Codes} codes=${get(source, 'requests_by_code', {})} /></td>
          </tr>`;
        })}
      </tbody>
    </table>
    <p class="muted">
      Unrouted requests: <${Codes} codes=${get(gateway, 'unrouted_by_code', {})} /> ·
      connections open ${fmtInt(num(gateway, 'connections_open'))}, refused
      ${' '}${fmtInt(num(gateway, 'connections_refused'))}
    </p>
  </section>`;
}

function PluginsCard({ samples, plugins }) {
  const latest = samples[samples.length - 1].stats;
  const infos = list(plugins, 'plugins');
  return html`<section class="card">
    <h2>Plugins</h2>
    <table data-testid="plugins">
      <thead><tr>
        <th>Plugin</th><th>State</th><th>Process</th><th class="num">Lag</th><th></th>
        <th class="num">In flight</th><th class="num">Delivered</th><th>Delivery rate</th>
        <th class="num">Retried</th><th class="num">Dead-lettered</th><th class="num">Stored</th>
        <th class="num">Restarts</th>
      </tr></thead>
      <tbody>
        ${list(latest, 'plugins').map((plugin) => {
          const name = str(plugin, 'name');
          const info = byName(infos, name);
          const lag = samples.map((s) => num(byName(list(s, 'plugins'), name), 'lag'));
          const delivered = rates(samples, (s) => num(byName(list(s, 'plugins'), name), 'delivered'));
          const error = str(plugin, 'last_error');
          return html`<tr key=${name} data-plugin=${name}>
            <td><a href=${`#/plugin/${encodeURIComponent(name)}`}>${name}</a></td>
            <td><span class=${stateClass(str(plugin, 'state'))} data-field="state"
              title=${error}>${str(plugin, 'state')}</span></td>
            <td><span class=${stateClass(str(info, 'process_state'))}>${str(info, 'process_state')}</span></td>
            <td class="num" data-field="lag">${fmtInt(num(plugin, 'lag'))}</td>
            <td><${Sparkline} points=${lag} label=${`lag of ${name}`} /></td>
            <td class="num" data-field="in_flight">${fmtInt(num(plugin, 'in_flight'))}</td>
            <td class="num" data-field="delivered">${fmtInt(num(plugin, 'delivered'))}</td>
            <td><${Sparkline} points=${delivered} label=${`delivery rate of ${name}`} /></td>
            <td class="num" data-field="retried">${fmtInt(num(plugin, 'retried'))}</td>
            <td class="num" data-field="dead_lettered">${fmtInt(num(plugin, 'dead_lettered'))}</td>
            <td class="num">
              <a href=${`#/dead-letters?plugin=${encodeURIComponent(name)}`}
                data-field="dead_letters_stored">${fmtInt(num(plugin, 'dead_letters_stored'))}</a>
            </td>
            <td class="num" data-field="restarts">${fmtInt(num(info, 'restarts'))}</td>
          </tr>`;
        })}
      </tbody>
    </table>
  </section>`;
}

export function OverviewPage() {
  const { samples, plugins, error } = useStatsHistory();
  if (!samples.length) {
    return html`<div><h1>Overview</h1><${ErrorBox} error=${error} />
      ${error ? null : html`<p class="muted">Loading…</p>`}</div>`;
  }
  const latest = samples[samples.length - 1].stats;
  return html`<div data-testid="overview">
    <h1>Overview</h1>
    <p class="muted">Figures at ${fmtTime(get(latest, 'taken_at'))}, refreshed every
      ${' '}${REFRESH_MS / 1000} s; counters start when pimgate starts.</p>
    <${ErrorBox} error=${error} />
    <div class="grid overview">
      <${LogCard} log=${get(latest, 'log', {})} />
      <${SourcesCard} samples=${samples} />
    </div>
    <${PluginsCard} samples=${samples} plugins=${plugins} />
  </div>`;
}
