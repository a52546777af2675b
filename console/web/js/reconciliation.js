// Reconciliation: every source with `rest`, its last run and totals (GetStats), and a run started
// now (Reconcile answers once the run has finished).
import { html, useState } from './vendor/preact-htm.js';
import { call, get, list, num, str } from './api.js';
import { ConfirmDialog, ErrorBox, fmtInt, fmtTime, usePoll } from './ui.js';
import { REFRESH_MS } from './overview.js';

function RunResult({ source, run }) {
  return html`<section class="card" data-testid="reconcile-result">
    <h2>Run ${fmtInt(num(run, 'run'))} of ${source}${get(run, 'full', false) ? ' (full)' : ''}</h2>
    <dl class="figures">
      <dt>Events added</dt><dd>${fmtInt(num(run, 'events_added'))}</dd>
      <dt>Scanned</dt><dd>${fmtInt(num(run, 'scanned'))}</dd>
      <dt>Updated events</dt><dd>${fmtInt(num(run, 'emitted'))}</dd>
      <dt>Deletions</dt><dd>${fmtInt(num(run, 'deleted'))}</dd>
      <dt>In sync</dt><dd>${fmtInt(num(run, 'in_sync'))}</dd>
      <dt>Invalid, unchecked</dt><dd>${fmtInt(num(run, 'invalid'))}, ${fmtInt(num(run, 'unchecked'))}</dd>
      <dt>API calls</dt><dd>${fmtInt(num(run, 'api_calls'))}</dd>
      <dt>Window start</dt><dd>${fmtTime(get(run, 'window_start'))}
        ${str(run, 'updated_filter') ? ` (updated > "${str(run, 'updated_filter')}" in ${str(run, 'filter_time_zone')})` : ''}</dd>
      <dt>Watermark</dt><dd>${fmtTime(get(run, 'watermark'))}${get(run, 'watermark_advanced', false) ? ' (advanced)' : ''}</dd>
      <dt>Started, finished</dt><dd>${fmtTime(get(run, 'started_at'))}, ${fmtTime(get(run, 'finished_at'))}</dd>
    </dl>
  </section>`;
}

export function ReconciliationPage() {
  const [stats, error, reload] = usePoll(() => call('GetStats'), REFRESH_MS);
  const [pending, setPending] = useState(null);
  const [result, setResult] = useState(null);
  const [full, setFull] = useState(false);
  const sources = list(stats, 'reconciliations');
  const start = (source) =>
    setPending({
      title: `Reconcile ${source}${full ? ' (full)' : ''} now?`,
      detail: full
        ? 'Lists every product and model of the PIM and adds a deletion for each one the log ' +
          'knows but the PIM no longer has. This can take a while on a large catalogue.'
        : 'Asks the PIM for the changes since the watermark and adds the events the webhooks missed.',
      confirmLabel: 'Reconcile',
      run: async () => setResult({ source, run: await call('Reconcile', { source, full }) }),
    });
  return html`<div data-testid="reconciliation-page">
    <h1>Reconciliation</h1>
    <${ErrorBox} error=${error} />
    ${stats && !sources.length
      ? html`<p class="muted" data-testid="no-reconciliation">No source has <code>rest:</code>, so nothing is reconciled.</p>`
      : null}
    ${sources.length ? html`
      <label class="inline"><input type="checkbox" checked=${full} onChange=${(e) => setFull(e.target.checked)} />
        Full run (compare everything, find deletions)</label>
      <table data-testid="reconciliations">
        <thead><tr><th>Source</th><th>Running</th><th>Last run</th><th>Result</th>
          <th class="num">Scanned</th><th class="num">Emitted</th><th class="num">Deleted</th>
          <th class="num">In sync</th><th class="num">API calls</th><th class="num">Seconds</th>
          <th class="num">Runs ok/failed</th><th>Watermark</th><th>Next run</th><th></th></tr></thead>
        <tbody>${sources.map((r) => {
          const source = str(r, 'source');
          const ran = !!get(r, 'last_finished_at') && Date.parse(get(r, 'last_finished_at')) > 0;
          return html`<tr key=${source} data-source=${source}>
            <td>${source}</td>
            <td>${get(r, 'running', false) ? 'yes' : 'no'}</td>
            <td>${fmtTime(get(r, 'last_finished_at'))}${get(r, 'last_full', false) ? ' (full)' : ''}</td>
            <td class="text">${ran ? (get(r, 'last_ok', false) ? 'ok' : `failed: ${str(r, 'last_error')}`) : '–'}</td>
            <td class="num">${fmtInt(num(r, 'last_scanned'))}</td>
            <td class="num">${fmtInt(num(r, 'last_emitted'))}</td>
            <td class="num">${fmtInt(num(r, 'last_deleted'))}</td>
            <td class="num">${fmtInt(num(r, 'last_in_sync'))}</td>
            <td class="num">${fmtInt(num(r, 'last_api_calls'))}</td>
            <td class="num">${num(r, 'last_duration_seconds').toFixed(1)}</td>
            <td class="num">${fmtInt(num(r, 'runs_succeeded'))}/${fmtInt(num(r, 'runs_failed'))}</td>
            <td>${fmtTime(get(r, 'watermark'))}</td>
            <td>${fmtTime(get(r, 'next_run_at'))}</td>
            <td><button type="button" data-testid="reconcile" onClick=${() => start(source)}>Reconcile now…</button></td>
          </tr>`;
        })}</tbody>
      </table>` : null}
    ${result ? html`<${RunResult} source=${result.source} run=${result.run} />` : null}
    <${ConfirmDialog} pending=${pending} onClose=${() => {
      setPending(null);
      reload();
    }} />
  </div>`;
}
