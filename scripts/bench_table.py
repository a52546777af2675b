#!/usr/bin/python3
"""Prints scripts/bench's one table from its results file (one JSON object per line): each
pimgate figure next to the same-run baseline it is compared with, and the ratio.

Then the "targets" table: each target of issue 16 (performance round 2) with its figure from this
run, the same-run baseline, the ratio and met / missed, or "not run" when the section that
measures it was not selected (PIMGATE_BENCH_ONLY). With TARGETS_JSON the targets are also written
there as a JSON array.

Usage: bench_table.py RESULTS.jsonl CONNECTIONS DISPATCH_IN_FLIGHT
                      [OPEN_RATE SECTIONS [TARGETS_JSON]]
SECTIONS: the comma-separated sections that ran, or "all"."""
import json
import sys

results_path, connections, in_flight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
open_rate = float(sys.argv[4]) if len(sys.argv) > 4 else 1000.0
sections = sys.argv[5] if len(sys.argv) > 5 else "all"
targets_json = sys.argv[6] if len(sys.argv) > 6 else ""
rows = [json.loads(line) for line in open(results_path)]
by_id = {r["id"]: r for r in rows if "id" in r}
storage = next((r for r in rows if r["kind"] == "storage"), {})

table = [("scenario", "throughput", "p50 ms", "p99 ms", "p99.9 ms", "same-run baseline", "ratio",
          "server CPU", "peak RSS")]


def ms(v):
    return f"{v:.2f}" if isinstance(v, (int, float)) else ""


def rate(v, unit="ev/s"):
    return f"{v:,.0f} {unit}"


def add(name, throughput="", p50=None, p99=None, p999=None, baseline="", ratio="", cpu="",
        rss=""):
    table.append((name, throughput, ms(p50), ms(p99), ms(p999), baseline, ratio, cpu, rss))


def section(title):
    table.append((f"-- {title}", "", "", "", "", "", "", "", ""))


def newconn_row(r):
    """A new-connection-per-request run: latency next to the same-run ceiling's, as differences."""
    if "error" in r:
        add(r["label"], r["error"], rss=f'{r.get("rss_mib", 0)} MiB')
        return
    base = by_id.get(r.get("baseline", ""))
    baseline, ratio = "(latency baseline)", ""
    if base and "p50_ms" in base:
        baseline = f'{short(base["label"])}: p50 {base["p50_ms"]:.2f} ms, p99 {base["p99_ms"]:.2f} ms'
        ratio = (f'p50 {r["p50_ms"] - base["p50_ms"]:+.2f} ms, '
                 f'p99 {r["p99_ms"] - base["p99_ms"]:+.2f} ms')
    errors = f', {r["errors"]} errors' if r.get("errors") else ""
    add(r["label"], f'{r["requests_per_s"]:,.0f} req/s{errors}', r["p50_ms"], r["p99_ms"],
        r["p999_ms"], baseline, ratio, rss=f'{r["rss_mib"]} MiB')


def short(label):
    """A baseline's name without its details: "HTTP ceiling, TLS, legacy x10" -> "HTTP ceiling"."""
    return label.split(",")[0].split(" (")[0] if label else ""


def ingest_row(r):
    if "error" in r:
        add(r["label"], r["error"], rss=f'{r.get("rss_mib", 0)} MiB')
        return
    eps, rps = r["events_per_s"], r["requests_per_s"]
    errors = f', {r["errors"]} errors' if r.get("errors") else ""
    cpu = ""
    if r.get("server_cores") is not None and eps:
        cpu = f'{r["server_cores"]:.2f} cores, {r["server_cores"] * 1e6 / eps:.0f} us/ev'
    baseline, ratio = "", ""
    base = by_id.get(r.get("baseline", ""))
    if r.get("mode") == "open":
        # Open loop: the rate is fixed, latency is the figure. Compared with the p99 of raw durable
        # storage at the same rate (pimgate) or shown as the latency floor (HTTP ceiling).
        if r.get("baseline") == "storage-open" and storage.get("open"):
            s = storage["open"]
            baseline = f'RocksDB open {storage["rate"]:.0f}/s: p99 {s["p99_ms"]:.2f} ms'
            ratio = f'p99 {r["p99_ms"] / s["p99_ms"]:.2f}x' if s["p99_ms"] else ""
        else:
            baseline = "(latency baseline)"
    elif base and "events_per_s" in base and base["events_per_s"]:
        baseline = f'{short(base["label"])}: {rate(base["events_per_s"])}'
        ratio = f'{eps / base["events_per_s"]:.2f}x'
    elif not r.get("baseline"):
        baseline = "(baseline)"
    add(r["label"], rate(eps) + f" ({rps:,.0f} req/s{errors})", r["p50_ms"], r["p99_ms"],
        r["p999_ms"], baseline, ratio, cpu, f'{r["rss_mib"]} MiB')
    if r["id"] in ("tls-sync-legacy", "plain-sync-legacy") and storage.get("group"):
        g = storage["group"]
        add("  same, against raw durable storage", "", None, None, None,
            f'RocksDB, {storage["writers"]} writers: {rate(g["events_per_s"])}',
            f'{eps / g["events_per_s"]:.2f}x' if g["events_per_s"] else "")


ingest_rows = [r for r in rows if r["kind"] == "ingest"
               and not r["id"].startswith(("backlog", "newconn", "budget", "js-"))]
if ingest_rows:
    section("ingest (closed loop unless 'open'; latency = HTTP answer)")
for r in ingest_rows:
    ingest_row(r)

newconn_rows = [r for r in rows if r["kind"] == "ingest" and r["id"].startswith("newconn")]
if newconn_rows:
    section(f"new connection per request (connect + TLS handshake + request; "
            f"{newconn_rows[0].get('connections', '?')} loadgen workers, open loop; "
            f"ratio = latency minus the ceiling's)")
for r in newconn_rows:
    newconn_row(r)

budget_rows = [r for r in rows if r["kind"] == "ingest" and r["id"].startswith("budget")]
if budget_rows:
    section("body budget under overload (throughput column: answered 200 within the sender's "
            "0.5 s; codes)")
for r in budget_rows:
    if "error" in r:
        add(r["label"], r["error"], rss=f'{r.get("rss_mib", 0)} MiB')
        continue
    share = 100.0 * r["within_budget"] / r["requests"] if r.get("requests") else 0.0
    codes = " ".join(f"{code}:{n}" for code, n in sorted(r.get("codes", {}).items()))
    add(r["label"], f'{share:.1f} % of {r["requests"]:,}', r["p50_ms"], r["p99_ms"], r["p999_ms"],
        codes, rss=f'{r["rss_mib"]} MiB')

if storage:
    section("storage ceiling (same disk, one request's commit per batch)")
if "error" in storage:
    add("storage ceiling", storage["error"])
elif storage:
    n = storage["events_per_batch"]
    nbytes = storage["batch_bytes"]
    f = storage["fsync"]
    add(f"write+fdatasync of {nbytes:,} bytes, 1 writer", rate(f["ops_per_s"], "syncs/s"),
        f["p50_ms"], f["p99_ms"], f["p999_ms"], "(baseline: the disk)")
    for key, name in (("single", "RocksDB sync batch, 1 writer"),
                      ("group", f'RocksDB sync batch, {storage["writers"]} writers'),
                      ("open", f'RocksDB sync batch, open {storage["rate"]:.0f}/s')):
        s = storage.get(key)
        if s:
            add(f"{name} ({n} events)", rate(s["events_per_s"]), s["p50_ms"], s["p99_ms"],
                s["p999_ms"], "(baseline)")

backlog_rows = [r for r in rows if r["kind"] == "ingest" and r["id"].startswith("backlog")]
if backlog_rows:
    section("backlog (same durable ingest, empty log vs a log holding a backlog)")
for r in backlog_rows:
    ingest_row(r)

console_full = by_id.get("console-full")
console_small = by_id.get("console-small")
if console_full:
    section(f"console pages (the API calls of one page load, {console_full.get('loads', 0)} "
            "loads; throughput column: calls, max, events read per search)")
    if "error" in console_full:
        add("console", console_full["error"])
    small_pages = {p["page"]: p for p in (console_small or {}).get("pages", [])}
    for p in console_full.get("pages", []):
        base = small_pages.get(p["page"])
        baseline, ratio = "", ""
        if base:
            baseline = (f'{console_small["events"]:,} events: p50 {base["p50_ms"]:.2f}, '
                        f'p99 {base["p99_ms"]:.2f}')
            ratio = (f'p50 {p["p50_ms"] / max(base["p50_ms"], 1e-3):.2f}x, '
                     f'p99 {p["p99_ms"] / max(base["p99_ms"], 1e-3):.2f}x')
        # Searches: the events each call read (at most the admin's max_scan, 10 000) and
        # whether it answered "more" (a next_page_token) rather than the end of the log.
        read = ""
        if "scanned_per_load" in p:
            read = f', read {p["scanned_per_load"]:,.0f}{" +more" if p["loads_with_more"] else ""}'
        add(f'console, {console_full["events"] / 1e6:g}M events: {p["page"]}',
            f'{p["calls"]} calls, max {p["max_ms"]:.1f} ms{read}', p["p50_ms"], p["p99_ms"], None,
            baseline, ratio, rss=f'{console_full["rss_mib"]} MiB')

if any(r["kind"] == "dispatch" for r in rows):
    section(f"dispatch (log -> plugin process over gRPC, max_in_flight {in_flight})")
for r in rows:
    if r["kind"] != "dispatch":
        continue
    name, rss = r["label"], f'{r.get("rss_mib", 0)} MiB'
    if "error" in r:
        add(name, r["error"], rss=rss)
        continue
    d, runs, n = r["dispatch_events_per_s"], r["runs"], r["events"]
    spread = lambda lo, hi: f" [{lo:,.0f}..{hi:,.0f}]" if runs > 1 else ""
    add(f"  raw log read ({r['event_bytes']:.0f}-byte events)", rate(r["read_events_per_s"]),
        baseline="(baseline)")
    add("  protobuf minimum (pimgate + plugin), 1 core", rate(r["codec_events_per_s"]) + "/core",
        baseline="(baseline)", cpu=f'{1e6 / r["codec_events_per_s"]:.1f} us/ev')
    if r.get("stream_events_per_s"):
        add("  bare gRPC stream into the same plugin",
            rate(r["stream_events_per_s"]) + spread(r["stream_min"], r["stream_max"]),
            baseline="(baseline)", cpu=f'{r["stream_cpu_us_per_event"]:.0f} us/ev both')
    sink = r.get("sink") or {}
    check = "" if r.get("complete") and sink.get("events", n) == n else " INCOMPLETE"
    median = f", median of {runs}" if runs > 1 else ""
    ratio = f'{d / r["stream_events_per_s"]:.2f}x stream' if r.get("stream_events_per_s") else ""
    ratio += f', {d / r["codec_events_per_s"]:.2f}x protobuf'
    add(f"{name} ({n // 1000}k events{median})", rate(d) + spread(r["dispatch_min"],
                                                                  r["dispatch_max"]) + check,
        baseline="bare stream, protobuf minimum", ratio=ratio,
        cpu=f'{r["dispatch_cpu_us_per_event"]:.0f} us/ev both', rss=rss)

if any(r["kind"] == "e2e" for r in rows):
    section("end to end (webhook received -> fsynced -> dispatched -> C++ handler called)")
for r in rows:
    if r["kind"] != "e2e":
        continue
    s, h = r["sink"], r["http"]
    if "error" in s:
        add(r["label"], s["error"], rss=f'{r["rss_mib"]} MiB')
        continue
    add(r["label"] + ": handler", f'{s["events"]:,} of {r["expect"]:,} events', s["p50_ms"],
        s["p99_ms"], s["p999_ms"], "HTTP answer of the same requests",
        f'p99 {s["p99_ms"] / h["p99_ms"]:.2f}x' if h and h.get("p99_ms") else "",
        rss=f'{r["rss_mib"]} MiB')
    if h:
        add("  HTTP answer (fsynced ack)", f'{h["requests_per_s"]:,.0f} req/s', h["p50_ms"],
            h["p99_ms"], h["p999_ms"])

# JetStream: ingest on the embedded store and on JetStream R1 / R3 beside the same-run HTTP
# ceiling, and dispatch of one backlog by 1 pimgate on RocksDB, 1 node and 3 nodes on R3.
js_missing = next((r for r in rows if r["kind"] == "jsmissing"), None)
js_ingest = [r for r in rows if r["kind"] == "ingest" and r["id"].startswith("js-")]
js_dispatch = [r for r in rows if r["kind"] == "jsdispatch"]
if js_missing or js_ingest or js_dispatch:
    section("jetstream ingest (same loadgen and mix; ratios to the same-run HTTP ceiling and "
            "RocksDB; server CPU: pimgate + nats-servers)")
if js_missing:
    add("jetstream", js_missing["error"])
for r in js_ingest:
    if "error" in r:
        add(r["label"], r["error"], rss=f'{r.get("rss_mib", 0)} MiB')
        continue
    eps, rps = r["events_per_s"], r["requests_per_s"]
    errors = f', {r["errors"]} errors' if r.get("errors") else ""
    kind, mix = r["id"].split("-")[1], r["id"].rsplit("-", 1)[1]
    # The ceiling is the baseline of all; RocksDB is compared with it; JetStream with both.
    bases = {"http": [], "rocksdb": ["HTTP"]}.get(kind, ["HTTP", "RocksDB"])
    baseline, ratios = [], []
    for name in bases:
        b = by_id.get(f'js-{"http" if name == "HTTP" else "rocksdb"}-{mix}')
        if b is not None and b.get("events_per_s"):
            baseline.append(f'{name} {b["events_per_s"]:,.0f}')
            ratios.append(f'{eps / b["events_per_s"]:.2f}x {name}')
    cpu = ""
    if r.get("server_cores") is not None and eps:
        cpu = f'{r["server_cores"]:.2f}'
        if r.get("store_cores") is not None:
            cpu += f' + nats {r["store_cores"]:.2f}'
        cores = r["server_cores"] + r.get("store_cores", 0.0)
        cpu += f' cores, {cores * 1e6 / eps:.0f} us/ev'
    add(r["label"], rate(eps) + f" ({rps:,.0f} req/s{errors})", r["p50_ms"], r["p99_ms"],
        r["p999_ms"], ", ".join(baseline) or "(baseline)", ", ".join(ratios), cpu,
        f'{r["rss_mib"]} MiB')
    if r.get("stream_records") and r.get("log_events"):
        seconds = r["requests"] / rps if rps else 0
        per_s = r["stream_records"] / (seconds + 1) if seconds else 0  # + the 1 s warm-up
        add(f'  stream: {r["stream_records"]:,} records for {r["log_events"]:,} events',
            f'{r["log_events"] / r["stream_records"]:.1f} ev/record, ~{per_s:,.0f} records/s')
if js_dispatch:
    section(f"jetstream dispatch (a backlog appended through EventLog, plugin paused; drained "
            f"after `pimgatectl resume`; max_in_flight {in_flight}; CPU: nodes + plugins)")
js_rocks = next((r for r in js_dispatch if r["id"] == "js-dispatch-rocksdb"), None)
js_one = next((r for r in js_dispatch if r["id"] == "js-dispatch-r3-1node"), None)
for r in js_dispatch:
    append = r.get("append") or {}
    written = f', appended at {append["events_per_s"]:,.0f} ev/s' if append.get("events_per_s") else ""
    name = f'{r["label"]} ({r["expect"] // 1000}k events{written})'
    if "error" in r:
        add(name, r["error"])
        continue
    bases = {"js-dispatch-rocksdb": [],
             "js-dispatch-r3-1node": [("RocksDB", js_rocks)]}.get(
                 r["id"], [("RocksDB", js_rocks), ("1 node", js_one)])
    baseline, ratios = [], []
    for base_name, b in bases:
        if b is not None and b.get("events_per_s"):
            baseline.append(f'{base_name} {b["events_per_s"]:,.0f}')
            ratios.append(f'{r["events_per_s"] / b["events_per_s"]:.2f}x {base_name}')
    shares = "/".join(f"{n:,}" for n in r["sink_events"]) if r["nodes"] > 1 else ""
    detail = f', per node {shares}' if shares else ""
    redelivered = f', {r["redeliveries"]} redelivered' if r.get("redeliveries") else ""
    settled = f', ready {r["settle_s"]:.1f} s after start' if r.get("settle_s") is not None else ""
    cpu = f'{r["cpu_s"] * 1e6 / r["events"]:.0f} us/ev' if r.get("cpu_s") else ""
    add(name, rate(r["events_per_s"]) + f' (from resume {r["resume_events_per_s"]:,.0f}'
        f'{detail}{redelivered}{settled})', baseline=", ".join(baseline) or "(baseline)",
        ratio=", ".join(ratios), cpu=cpu)

widths = [max(len(str(row[i])) for row in table if not row[0].startswith("-- "))
          for i in range(len(table[0]))]
for n, row in enumerate(table):
    if row[0].startswith("-- "):
        print(row[0])
        continue
    print("  ".join(str(c).ljust(w) if i in (0, 5) else str(c).rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    if n == 0:
        print("  ".join("-" * w for w in widths))
print(f"""
ev/s = events/s; legacy x10 = Events API requests of 10 events, platform x1 = Event Platform
requests of 1 event. Ingest: {connections} loadgen connections on the same 2 cores as the server,
closed loop unless 'open' (open: requests due at a fixed rate, latency counted from the due time,
so no coordinated omission). server CPU = the server's cores over the run and CPU us per event.
HTTP ceiling = bench/http_ceiling.cc, a minimal Beast server that reads the body and answers 200.
Storage ceiling = bench/storage_ceiling.cc. Dispatch: CPU us/ev of pimgate's process + the plugin.
Peak RSS = the server's VmHWM (dispatch: the bench process holding log and dispatcher).""")
if js_ingest or js_dispatch:
    print("""JetStream: R1 = a stream on one nats-server, R3 = on three clustered on loopback, all on the
same cores as pimgate and the loadgen; a 200 then means committed by the stream (store.sync is
not read: nats-server 2.9 does not fsync each write, see docs/scale-out.md). jetstream dispatch:
events over the time from the first handler call on any node's sink to the last (from resume:
from the `pimgatectl resume` calls); 3 nodes on one machine share its cores.""")


# ---------------------------------------------------------------------------------------------
# Targets of issue 16, each from this run's figures: never "met" without a measurement.
def ran(section):
    return sections == "all" or section in sections.split(",")


targets = []  # dicts: target, measured, baseline, ratio, result


def target(name, section, measure):
    """measure() returns (measured, baseline, ratio, met) or a string saying why there is no
    figure although the section ran. An informational row's measure (measure.informational) is
    not a target: without a figure it is "no figure", never "missed"."""
    if not ran(section):
        row = dict(target=name, measured="", baseline="", ratio="",
                   result=f"not run (section '{section}' not selected)")
    else:
        try:
            m = measure()
        except (KeyError, TypeError, ZeroDivisionError) as e:
            m = f"no result ({type(e).__name__}: {e})"
        if isinstance(m, str):
            result = ("no figure (informational, not a target)"
                      if getattr(measure, "informational", False) else "missed (no figure)")
            row = dict(target=name, measured=m, baseline="", ratio="", result=result)
        else:
            measured, baseline, ratio, met = m
            row = dict(target=name, measured=measured, baseline=baseline, ratio=ratio,
                       result=met if isinstance(met, str) else ("met" if met else "missed"))
    targets.append(row)


def ingest_result(id_):
    r = by_id.get(id_)
    if r is None:
        return None, f"no '{id_}' result"
    if "error" in r:
        return None, r["error"]
    if r.get("errors"):
        return None, f'{r["errors"]} failed requests in {id_}'
    if r.get("server") == "pimgate" and r.get("store_sync") is not True:
        return None, f"{id_} did not run with store.sync: true (its config)"
    return r, ""


def throughput_target(id_, base_id, minimum):
    def measure():
        r, why = ingest_result(id_)
        b, why_b = ingest_result(base_id)
        if r is None or b is None:
            return why or why_b
        ratio = r["events_per_s"] / b["events_per_s"]
        return (f'{r["events_per_s"]:,.0f} ev/s',
                f'{short(b["label"])}: {b["events_per_s"]:,.0f} ev/s', f"{ratio:.2f}x",
                ratio >= minimum)
    return measure


def closed_p99_target(id_, base_id, limit_ms):
    def measure():
        r, why = ingest_result(id_)
        b, why_b = ingest_result(base_id)
        if r is None or b is None:
            return why or why_b
        met = r["p99_ms"] < limit_ms
        if r.get("connections", connections) != 32:
            met = f'not run at 32 connections ({r.get("connections", connections)})'
        return (f'p99 {r["p99_ms"]:.2f} ms', f'{short(b["label"])}: p99 {b["p99_ms"]:.2f} ms',
                f'{r["p99_ms"] / b["p99_ms"]:.2f}x', met)
    return measure


def open_p99_target(limit_ms):
    def measure():
        r, why = ingest_result("tls-sync-open")
        if r is None:
            return why
        if storage.get("open"):
            base = storage["open"]["p99_ms"]
            baseline = f'RocksDB sync batches, open {storage["rate"]:.0f}/s: p99 {base:.2f} ms'
        else:
            b, why_b = ingest_result("http-tls-open")
            if b is None:
                return why_b
            base = b["p99_ms"]
            baseline = f'HTTP ceiling, open {open_rate:.0f} req/s: p99 {base:.2f} ms'
        met = r["p99_ms"] < limit_ms
        if open_rate != 1000:
            met = f"not run at 1 000 req/s ({open_rate:.0f})"
        return (f'p99 {r["p99_ms"]:.2f} ms at {r["requests_per_s"]:,.0f} req/s', baseline,
                f"{r['p99_ms'] / base:.2f}x" if base else "", met)
    return measure


def dispatch_result(label):
    r = next((r for r in rows if r["kind"] == "dispatch" and r["label"] == label), None)
    if r is None:
        return None, f"no '{label}' result (plugin runtime or SDK missing?)"
    if "error" in r:
        return None, r["error"]
    sink = r.get("sink") or {}
    if not r.get("complete") or sink.get("events", r["events"]) != r["events"]:
        return None, "incomplete: not every event reached the plugin"
    return r, ""


def dispatch_rate_target(label, minimum):
    """minimum None: an informational row (no met / missed)."""
    def measure():
        r, why = dispatch_result(label)
        if r is None:
            return why
        d = r["dispatch_events_per_s"]
        stream = r.get("stream_events_per_s")
        met = "info (not a target)" if minimum is None else d >= minimum
        return (f"{d:,.0f} ev/s", f"bare gRPC stream: {stream:,.0f} ev/s" if stream else "",
                f"{d / stream:.2f}x" if stream else "", met)
    measure.informational = minimum is None
    return measure


def dispatch_ratio_target(label, minimum):
    def measure():
        r, why = dispatch_result(label)
        if r is None:
            return why
        d, stream = r["dispatch_events_per_s"], r.get("stream_events_per_s")
        if not stream:
            return f"{d:,.0f} ev/s, but no bare-stream baseline"
        return (f"{d:,.0f} ev/s", f"bare gRPC stream: {stream:,.0f} ev/s", f"{d / stream:.2f}x",
                d / stream >= minimum)
    return measure


def durability_target():
    r = by_id.get("durability-sync")
    control = by_id.get("durability-nosync")
    if r is None:
        return "no durability result"
    if "error" in r:
        return r["error"]
    n, ok = r["answers"], r["answers_after_fsync"]
    if n == 0:
        return "no 200 answer seen in the trace"
    baseline, ratio, met = "", f"{ok / n:.2f}", ok == n
    if control and "error" not in control and control.get("answers"):
        cn, cok = control["answers"], control["answers_after_fsync"]
        baseline = f"control, store.sync: false: {cok:,} of {cn:,} ({r['fsyncs']:,} vs " \
                   f"{control['fsyncs']:,} fsyncs)"
        if cok == cn and met:
            met = "inconclusive: the control also fsynced before every 200"
    return (f"{ok:,} of {n:,} answers after an fsync (store.sync: true)", baseline, ratio, met)


target("durable ingest, TLS, legacy x10 >= 0.6x HTTP ceiling", "ingest",
       throughput_target("tls-sync-legacy", "http-tls-legacy", 0.6))
target("durable ingest, TLS, Event Platform x1 >= 0.5x HTTP ceiling", "ingest",
       throughput_target("tls-sync-platform", "http-tls-platform", 0.5))
target(f"p99 ack < 10 ms, {connections} connections closed loop (TLS sync=true, legacy x10)",
       "ingest", closed_p99_target("tls-sync-legacy", "http-tls-legacy", 10.0))
target(f"p99 ack < 10 ms, {connections} connections closed loop (TLS sync=true, platform x1)",
       "ingest", closed_p99_target("tls-sync-platform", "http-tls-platform", 10.0))
target(f"p99 ack < 5 ms, open loop {open_rate:,.0f} req/s (TLS sync=true, legacy x10)", "ingest",
       open_p99_target(5.0))
target("dispatch >= 100,000 product events/s to the C++ sink (handler reads the header)",
       "dispatch", dispatch_rate_target("dispatch to C++ plugin, product events", 100000))
target("  same, handler reads each event's data (informational)", "dispatch",
       dispatch_rate_target("dispatch to C++ plugin, product events, handler reads data", None))
target("  same, plain Handler (whole event decoded; informational)", "dispatch",
       dispatch_rate_target("dispatch to C++ plugin, product events, plain Handler", None))
target("Python plugin >= 0.9x its bare stream (product events)", "dispatch",
       dispatch_ratio_target("dispatch to Python plugin, product events", 0.9))
target("Node plugin >= 0.9x its bare stream (product events)", "dispatch",
       dispatch_ratio_target("dispatch to Node plugin, product events", 0.9))
target("store.sync: true fsyncs before every 200 (1 connection, strace)", "durability",
       durability_target)

header = dict(target="target", measured="measured", baseline="same-run baseline", ratio="ratio",
              result="result")
cols = list(header)
tw = {c: max(len(str(t[c])) for t in [header] + targets) for c in cols}
print("\n-- targets (issue 16; measured in this run)")
for n, t in enumerate([header] + targets):
    print("  ".join(str(t[c]).rjust(tw[c]) if c == "ratio" else str(t[c]).ljust(tw[c])
                    for c in cols).rstrip())
    if n == 0:
        print("  ".join("-" * tw[c] for c in cols))
if targets_json:
    with open(targets_json, "w") as f:
        json.dump(targets, f, indent=1)
        f.write("\n")
