"""What every Python peer of `muster bench --peers` shares: the command line (the counts
muster passes, the same it uses itself), the payload and hop of docs/workloads.md, the
percentiles muster uses, and the one JSON line a peer prints per workload.

Each peer runs exactly one workload per process and prints one line:
{"peer": ..., "version": ..., "workload": "W1", "tasks": N, "figures": {name: value}}
"""

import argparse
import json
import math
import sys


def parse_args(description):
    """The arguments `muster bench --peers` passes; every count is bounded."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--workload", choices=["W1", "W2", "W3"], required=True)
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--in-flight", type=int, default=1000, dest="in_flight")
    a = p.parse_args()
    for name in ("tasks", "warmup", "agents", "in_flight"):
        v = getattr(a, name)
        if v < 0 or v > 100_000_000:
            p.error(f"--{name.replace('_', '-')} {v}: expected 0 to 100000000")
    if a.tasks == 0 or a.agents == 0 or a.in_flight == 0:
        p.error("--tasks, --agents and --in-flight must be at least 1")
    return a


def payload(i):
    """The 5-field payload of task i."""
    return {"task_id": i, "hops": 0, "last": "", "data": "hello world", "score": 0.5}


def percentile(sorted_values, p):
    """Nearest-rank percentile, as muster's report computes it."""
    if not sorted_values:
        return float("nan")
    rank = math.ceil(p / 100.0 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def peak_rss_mb():
    """This process's peak resident memory (VmHWM), MiB. Not getrusage's ru_maxrss: on
    Linux a child inherits its parent's maximum across fork and exec, so it would report
    muster's peak instead of the peer's."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def emit(peer, version, workload, tasks, figures):
    """Prints the one JSON line muster reads (a figure that could not be read, NaN, is
    left out rather than printed as invalid JSON)."""
    figures = {k: v for k, v in figures.items() if math.isfinite(v)}
    line = {"peer": peer, "version": version, "workload": workload, "tasks": tasks,
            "figures": figures}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def fail(message):
    """A workload that did not complete: no figure, a message, exit 1."""
    sys.stderr.write(message + "\n")
    sys.exit(1)
