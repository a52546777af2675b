// One plugin: its process and delivery, and the operator's actions on it (pause, resume,
// restart, seek to a sequence or a time), each confirmed first.
import { html, useState } from './vendor/preact-htm.js';
import { call, get, list, num, str } from './api.js';
import {
  ConfirmDialog, ErrorBox, fmtInt, inputToRfc3339, stateClass, usePoll,
} from './ui.js';
import { REFRESH_MS } from './overview.js';

async function loadPlugin(name) {
  const [plugins, stats] = await Promise.all([call('ListPlugins'), call('GetStats')]);
  const info = list(plugins, 'plugins').find((p) => str(p, 'name') === name);
  const delivery = list(stats, 'plugins').find((p) => str(p, 'name') === name);
  return { info, delivery, head: num(get(stats, 'log', {}), 'head_sequence') };
}

export function PluginPage({ name }) {
  const [data, error, reload] = usePoll(() => loadPlugin(name), REFRESH_MS, [name]);
  const [pending, setPending] = useState(null);
  const [result, setResult] = useState(null);
  const [seekSequence, setSeekSequence] = useState('');
  const [seekTime, setSeekTime] = useState('');

  const ask = (title, detail, confirmLabel, run) =>
    setPending({ title, detail, confirmLabel, run: async () => setResult(await run()) });
  const close = () => {
    setPending(null);
    reload();
  };

  if (!data) return html`<div><h1>Plugin ${name}</h1><${ErrorBox} error=${error} /></div>`;
  if (!data.info) return html`<div><h1>Plugin ${name}</h1><p class="error">No plugin "${name}".</p></div>`;
  const { info, delivery, head } = data;
  const state = str(delivery || info, delivery ? 'state' : 'delivery_state');
  const stderr = list(info, 'process_stderr');

  const seekToSequence = (e) => {
    e.preventDefault();
    const sequence = seekSequence.trim();
    if (!/^\d+$/.test(sequence)) {
      setResult({ error: 'A sequence is a whole number from 1 to the head + 1.' });
      return;
    }
    ask(`Seek ${name} to sequence ${sequence}?`,
      `Its next event becomes sequence ${sequence} (head is ${head}). Deliveries in flight are ` +
        'abandoned; moving forward skips events.', 'Seek',
      async () => ({ seek: await call('SeekPlugin', { plugin: name, sequence }) }));
  };
  const seekToTime = (e) => {
    e.preventDefault();
    const time = inputToRfc3339(seekTime);
    if (!time) {
      setResult({ error: 'Pick a date and time (UTC).' });
      return;
    }
    ask(`Seek ${name} to ${time}?`,
      'Its next event becomes the first received at or after that time. Deliveries in flight ' +
        'are abandoned; moving forward skips events.', 'Seek',
      async () => ({ seek: await call('SeekPlugin', { plugin: name, time }) }));
  };

  return html`<div data-testid="plugin-page">
    <h1>Plugin ${name}</h1>
    <${ErrorBox} error=${error} />
    <div class="grid">
      <section class="card">
        <h2>Delivery</h2>
        <dl class="figures">
          <dt>State</dt><dd><span class=${stateClass(state)} data-testid="delivery-state">${state}</span></dd>
          <dt>Cursor</dt><dd>${fmtInt(num(delivery, 'cursor'))}</dd>
          <dt>Lag</dt><dd>${fmtInt(num(delivery, 'lag'))}</dd>
          <dt>In flight</dt><dd>${fmtInt(num(delivery, 'in_flight'))}</dd>
          <dt>Delivered</dt><dd>${fmtInt(num(delivery, 'delivered'))}</dd>
          <dt>Retried</dt><dd>${fmtInt(num(delivery, 'retried'))}</dd>
          <dt>Dead-lettered</dt><dd>${fmtInt(num(delivery, 'dead_lettered'))}</dd>
          <dt>Dead letters stored</dt><dd>
            <a href=${`#/dead-letters?plugin=${encodeURIComponent(name)}`}>
              ${fmtInt(num(delivery, 'dead_letters_stored'))}</a></dd>
          <dt>Skipped (filters, stale)</dt>
          <dd>${fmtInt(num(delivery, 'skipped_filter'))}, ${fmtInt(num(delivery, 'skipped_stale'))}</dd>
          <dt>Streams opened</dt><dd>${fmtInt(num(delivery, 'connects'))}</dd>
          <dt>Last error</dt><dd class="text">${str(delivery, 'last_error') || '–'}</dd>
        </dl>
      </section>
      <section class="card">
        <h2>Process</h2>
        <dl class="figures">
          <dt>Address</dt><dd class="text">${str(info, 'address')}</dd>
          <dt>State</dt><dd><span class=${stateClass(str(info, 'process_state'))}>${str(info, 'process_state')}</span></dd>
          <dt>PID</dt><dd>${num(info, 'pid') || '–'}</dd>
          <dt>Restarts</dt><dd>${fmtInt(num(info, 'restarts'))}</dd>
          <dt>Last error</dt><dd class="text">${str(info, 'process_error') || '–'}</dd>
          <dt>Hydration</dt><dd>${fmtInt(num(info, 'hydrating'))} now, ${fmtInt(num(info, 'hydration_fetches'))}
            ${' '}fetched, ${fmtInt(num(info, 'hydration_cache_hits'))} cached,
            ${' '}${fmtInt(num(info, 'hydration_not_found'))} not found, ${fmtInt(num(info, 'hydration_failures'))} failed</dd>
        </dl>
        ${stderr.length ? html`<h3>Last stderr lines</h3><pre class="json">${stderr.join('\n')}</pre>` : null}
      </section>
    </div>
    <section class="card">
      <h2>Actions</h2>
      <div class="actions">
        <button type="button" data-testid="pause" disabled=${state === 'paused'}
          onClick=${() => ask(`Pause ${name}?`, 'Nothing new is sent to it and nothing is skipped; ' +
            'deliveries already outstanding complete.', 'Pause',
          async () => (await call('PausePlugin', { plugin: name }), { done: `${name} paused` }))}>Pause</button>
        <button type="button" data-testid="resume" disabled=${state !== 'paused'}
          onClick=${() => ask(`Resume ${name}?`, 'Delivery starts again from its cursor.', 'Resume',
          async () => (await call('ResumePlugin', { plugin: name }), { done: `${name} resumed` }))}>Resume</button>
        <button type="button" data-testid="restart"
          onClick=${() => ask(`Restart ${name}'s process?`, 'Its events are held, deliveries in ' +
            'flight drain, the process is stopped and started again.', 'Restart',
          async () => {
            const r = await call('RestartPlugin', { plugin: name });
            return { done: `restarted: pid ${num(r, 'old_pid')} → ${num(r, 'new_pid')}, ` +
              `${num(r, 'redelivered')} of ${num(r, 'in_flight')} in flight delivered again` };
          })}>Restart</button>
      </div>
      <form class="inline" onSubmit=${seekToSequence}>
        <label for="seek-sequence">Seek to sequence</label>
        <input id="seek-sequence" inputmode="numeric" placeholder=${`1 … ${head + 1}`}
          value=${seekSequence} onInput=${(e) => setSeekSequence(e.target.value)} />
        <button type="submit">Seek…</button>
      </form>
      <form class="inline" onSubmit=${seekToTime}>
        <label for="seek-time">Seek to time (UTC)</label>
        <input id="seek-time" type="datetime-local" step="1" value=${seekTime}
          onInput=${(e) => setSeekTime(e.target.value)} />
        <button type="submit">Seek…</button>
      </form>
      ${result && result.error ? html`<p class="error">${result.error}</p>` : null}
      ${result && result.done ? html`<p class="ok" data-testid="action-result">${result.done}</p>` : null}
      ${result && result.seek
        ? html`<p class="ok" data-testid="action-result">Resumes from sequence
          ${' '}${fmtInt(num(result.seek, 'sequence'))} (head ${fmtInt(num(result.seek, 'head_sequence'))}):
          ${' '}${fmtInt(num(result.seek, 'events_to_replay'))} events to go through.</p>`
        : null}
    </section>
    <${ConfirmDialog} pending=${pending} onClose=${close} />
  </div>`;
}
