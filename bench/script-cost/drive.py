#!/usr/bin/env python3
"""A fixed workload of quern's scripts, called directly with FCALL in fixed
batches, so that two script libraries can be compared by the instructions
redis-server spends on it (see run). usage:
    drive.py PORT LIBRARY SCENARIO JOBS BATCH
MODE=add runs only the adds, MODE=drain only the fetches and completions
(after a MODE=add run), anything else both."""
import os
import sys

import redis

port, lib, scenario, jobs, batch = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
mode = os.environ.get("MODE", "all")
# Completions carry the worker's run and wait times (since the scripts of
# December 2026; older ones take id, token, result only).
timed_acks = os.environ.get("TIMED_ACKS") == "1"
r = redis.Redis(port=port)
queue = "bq"
base = f"quern-bench:{{{queue}}}:"
# The nine standard keys, in prelude order (common/src/keys.rs).
keys = [base + s for s in ["meta", "wait", "prio", "delayed", "active", "completed", "dlq", "events", "wake"]]
payload = '{"i":1,"pad":"' + "x" * 100 + '"}'


def call(script, *argv):
    return r.execute_command("FCALL", f"{lib}_{script}", len(keys), *keys, base + "j:", "10000", *argv)


def drain(total):
    """Fetch and complete in batches until `total` jobs completed."""
    done = 0
    while done < total:
        reply = call("fetch", batch, 30000, "w1", 100)
        # Items per leased job: 6, and 7 (when it was added) with timed acks.
        token, ids = reply[2], [reply[i] for i in range(4, len(reply), 7 if timed_acks else 6)]
        if not ids:
            sys.exit(f"nothing to fetch after {done} of {total} jobs")
        if timed_acks:
            # Run 3 ms, waited 40 ms: the buckets the worker would pick.
            acks = [3 * len(ids), 40 * len(ids)]
            for job in ids:
                acks += [job, token, "", "rb1", "wb4", 3, 40]
        else:
            acks = []
            for job in ids:
                acks += [job, token, ""]
        call("complete", 1000, *acks)
        done += len(ids)


adding = mode != "drain"
if scenario == "plain":
    for _ in range(0, jobs, batch) if adding else []:
        call("add", batch, "plain", *(["job", payload, ""] * batch))
    total = jobs
elif scenario == "keyed":
    # 1,000 concurrency keys of limit 1 (quern bench's keyed_drain).
    if adding:
        call("key_limit", "", "1")
        for start in range(0, jobs, batch):
            args = []
            for n in range(start, start + batch):
                args += ["", "job", payload, "", "", 0, 0, "", 0, f"key{n % 1000}", ""]
            call("add", batch, "keyed", *args)
    total = jobs
elif scenario == "flow":
    # Parents of 10 children in the same queue, 10 trees per call.
    parents = jobs // 11 // 10 * 10
    for p0 in range(0, parents, 10) if adding else []:
        args, nodes = [], 0
        for p in range(p0, p0 + 10):
            kids = [f"c{p}-{k}" for k in range(10)]
            args += [f"p{p}", "parent", payload, "", 0, "", 10] + [f"{queue}/{c}" for c in kids]
            for c in kids:
                args += [c, "child", payload, "", 0, f"\n{'p' + str(p)}\nfail_parent\n{queue}/{c}", 0]
            nodes += 11
        call("flow", "add", nodes, *args)
    total = parents * 11
else:
    sys.exit(f"unknown scenario {scenario} (plain, keyed, flow)")
if mode != "add":
    drain(total)
print(total)
