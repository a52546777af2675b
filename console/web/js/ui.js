// Shared pieces of the console: formatting, the sparkline, the confirmation dialog, errors, the
// JSON view. Everything is rendered by preact from text: no innerHTML anywhere, so event data
// (attacker-controlled) can never become markup.
import { html, useEffect, useRef, useState } from './vendor/preact-htm.js';
import { get } from './api.js';

export function fmtInt(n) {
  return Number(n || 0).toLocaleString('en-US');
}

export function fmtBytes(n) {
  n = Number(n || 0);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

export function fmtRate(n) {
  if (!Number.isFinite(n)) return '–';
  return n >= 100 ? `${Math.round(n)}/s` : `${n.toFixed(1)}/s`;
}

// An RFC 3339 timestamp as UTC "2026-12-05 04:26:41Z"; "–" when unset.
export function fmtTime(value) {
  if (!value) return '–';
  const d = new Date(value);
  if (Number.isNaN(d.getTime()) || d.getTime() <= 0) return '–';
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// A datetime-local input's value (read as UTC) as an RFC 3339 timestamp; '' when empty.
export function inputToRfc3339(value) {
  if (!value) return '';
  const d = new Date(`${value}Z`);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

// A line of the last `points` values, scaled to its own maximum.
export function Sparkline({ points, label, width = 120, height = 28 }) {
  const values = points.length ? points : [0];
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const coords = values
    .map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`)
    .join(' ');
  return html`<svg class="spark" viewBox="0 0 ${width} ${height}" width=${width} height=${height}
      role="img" aria-label=${label}>
    <polyline points=${coords} />
  </svg>`;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  const code = error.code ? `${error.code}: ` : '';
  return html`<p class="error" role="alert">${code}${error.message}</p>`;
}

// Asks before an action: `pending` = {title, detail, confirmLabel, run}; run() is awaited and its
// error shown in the dialog.
export function ConfirmDialog({ pending, onClose }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const confirmRef = useRef(null);
  useEffect(() => {
    setBusy(false);
    setError(null);
    if (pending && confirmRef.current) confirmRef.current.focus();
  }, [pending]);
  if (!pending) return null;
  const confirm = async () => {
    setBusy(true);
    setError(null);
    try {
      await pending.run();
      onClose(true);
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  return html`<div class="modal-backdrop">
    <div class="modal" role="dialog" aria-modal="true" aria-labelledby="confirm-title">
      <h2 id="confirm-title">${pending.title}</h2>
      <p>${pending.detail}</p>
      <${ErrorBox} error=${error} />
      <div class="actions">
        <button type="button" onClick=${() => onClose(false)} disabled=${busy}>Cancel</button>
        <button type="button" class="danger" data-testid="confirm" ref=${confirmRef}
          onClick=${confirm} disabled=${busy}>${busy ? 'Working…' : pending.confirmLabel}</button>
      </div>
    </div>
  </div>`;
}

// A value as indented JSON text inside <pre>: preact sets it as a text node.
export function JsonView({ value }) {
  return html`<pre class="json" data-testid="json">${JSON.stringify(value, null, 2)}</pre>`;
}

// The answer codes of a map<uint32, uint64> ("200": "5") as "200 ×5 · 401 ×1".
export function Codes({ codes }) {
  const entries = Object.entries(codes || {}).sort(([a], [b]) => Number(a) - Number(b));
  if (!entries.length) return html`<span class="muted">none</span>`;
  return html`<span class="codes">${entries.map(
    ([code, count]) =>
      html`<span class=${`code code-${String(code)[0]}xx`} key=${code}>${code} ×${fmtInt(count)}</span>`,
  )}</span>`;
}

export function stateClass(state) {
  return `state state-${String(state || 'unknown').replace(/[^a-z_]/gi, '')}`;
}

// Polls `load` every `intervalMs` while the page is shown; returns [data, error, reload].
export function usePoll(load, intervalMs, deps = []) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let stopped = false;
    let timer = null;
    const run = async () => {
      try {
        const value = await load();
        if (!stopped) {
          setData(value);
          setError(null);
        }
      } catch (e) {
        if (!stopped) setError(e);
      }
      if (!stopped && intervalMs > 0) timer = setTimeout(run, intervalMs);
    };
    run();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [...deps, tick]);
  return [data, error, () => setTick((t) => t + 1)];
}

export { get };
