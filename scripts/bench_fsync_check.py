#!/usr/bin/python3
"""Reads an strace log of a pimgate server (strace -f -ttt -T -y -e trace=fdatasync,fsync,sendmsg,
sendto,write,writev) taken while ONE connection sent requests in a closed loop, and prints one
JSON object: how many `200` answers were written, and how many of them had an fsync (fdatasync or
fsync) of RocksDB's write-ahead log (a file named *.log; -y shows each descriptor's path) complete
after the previous answer and before this answer was written. With one connection in a closed
loop each request arrives only after the previous answer, so an answer preceded by such an fsync
was fsynced before its 200; with store.sync: true every answer must be.

Usage: bench_fsync_check.py STRACE_LOG SYNC(true|false)"""
import json
import re
import sys

log_path, sync = sys.argv[1], sys.argv[2] == "true"
# "PID TIME call(args) = RESULT <DURATION>", or the halves of a call another thread interrupted:
# "PID TIME call(args <unfinished ...>" and "PID TIME <... call resumed>...) = RESULT <DURATION>".
line_re = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(?:<\.\.\. )?(\w+)(.*?)(?:<(\d+\.\d+)>)?\s*$")
wal_re = re.compile(r"\(\d+<[^>]*\.log>")  # "(11</path/000004.log>": a WAL file's descriptor
fsync_done = []  # completion times of the WAL fsyncs that returned 0
answer_times = []  # times the 200 answers were written
unfinished = {}  # thread -> whether its interrupted fsync call is on the WAL
for line in open(log_path, errors="replace"):
    m = line_re.match(line.rstrip("\n"))
    if not m:
        continue
    tid, t, call, rest, duration = m.group(1), float(m.group(2)), m.group(3), m.group(4), m.group(5)
    if call in ("fdatasync", "fsync"):
        if "<unfinished ...>" in rest:
            unfinished[tid] = bool(wal_re.match(rest))  # its "resumed" half carries the result
            continue
        resumed = rest.startswith(" resumed>")
        on_wal = unfinished.pop(tid, False) if resumed else bool(wal_re.match(rest))
        if not on_wal or not re.search(r"= 0 <", line):
            continue  # another file, or failed: not the durability point of a commit
        # A resumed line is stamped when the call returned; a whole line when it was entered.
        fsync_done.append(t if resumed else t + float(duration or 0))
    elif call in ("sendmsg", "sendto", "write", "writev") and '"HTTP/1.1 200' in rest:
        answer_times.append(t)
answer_times.sort()
fsync_done.sort()
after_fsync, previous, i = 0, float("-inf"), 0
for t in answer_times:
    # Any fsync that completed after the previous answer and before this one was written?
    while i < len(fsync_done) and fsync_done[i] <= previous:
        i += 1
    if i < len(fsync_done) and fsync_done[i] <= t:
        after_fsync += 1
    previous = t
answers, fsyncs = len(answer_times), len(fsync_done)
print(json.dumps({"sync": sync, "answers": answers, "answers_after_fsync": after_fsync,
                  "fsyncs": fsyncs}))
