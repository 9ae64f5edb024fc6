#!/usr/bin/env python3
"""Writes the results tables of BENCHMARKS.md from `muster bench --json` output.

Usage: python3 scripts/bench_markdown.py docs/bench.json > /tmp/results.md
Every figure: median and min..max over the runs, with its unit, as the bench reported it;
with `--peers`, each peer's figures and its ratios to muster, taken run by run.
"""
import json
import sys


def fmt(v, unit):
    if unit in ("1/s", "count") or abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.2f}"


SUMMARY = [
    # (workload, label, muster figure, peer figure, ratio name)
    ("W1", "W1 µs per handoff (workflow)", "muster_workflow_us_per_handoff", "us_per_handoff",
     "muster_workflow_over_peer"),
    ("W1", "W1 µs per handoff (chained delegates)", "muster_delegate_us_per_handoff",
     "us_per_handoff", "muster_delegate_over_peer"),
    ("W2", "W2 tasks/s (muster on every core)", "muster_tasks_per_s", "tasks_per_s",
     "muster_over_peer_throughput"),
    ("W2", "W2 tasks/s (muster on one shard, like the peers' one thread)",
     "muster_one_shard_tasks_per_s", "tasks_per_s", "muster_one_shard_over_peer_throughput"),
    ("W3", "W3 p50 µs", "muster_p50_us", "p50_us", "muster_over_peer_p50"),
    ("W3", "W3 p99 µs", "muster_p99_us", "p99_us", "muster_over_peer_p99"),
]


def span(f, unit):
    return f"{fmt(f['median'], unit)} ({fmt(f['min'], unit)}..{fmt(f['max'], unit)})"


def peers_summary(doc):
    """One table: muster and every peer side by side, with the ratios of the same run."""
    ws = {w["id"]: w for w in doc["workloads"]}
    names = []
    for w in doc["workloads"]:
        for p in w.get("peers", []):
            if (p["peer"], p["version"]) not in names:
                names.append((p["peer"], p["version"]))
    if not names:
        return
    print("### Peers in the same run: muster beside each peer\n")
    print("Median (min..max) over the runs; under each peer, the ratio muster/peer taken run "
          "by run (median, min..max): for times below 1 means muster is faster, for tasks/s "
          "above 1.\n")
    print("| figure | muster | " + " | ".join(f"{n} {v}" for n, v in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for wid, label, ours, theirs, ratio in SUMMARY:
        w = ws.get(wid)
        if w is None:
            continue
        mine = next((f for f in w["figures"] if f["name"] == ours), None)
        cells = []
        for n, v in names:
            p = next((p for p in w.get("peers", []) if p["peer"] == n), None)
            f = p and next((f for f in p["figures"] if f["name"] == theirs), None)
            r = p and next((r for r in p.get("ratios", []) if r["name"] == ratio), None)
            if not f:
                cells.append("not run")
                continue
            cell = span(f, f["unit"])
            if r:
                m = r["median"]
                how = m if m >= 1 else 1 / m
                cell += (f"; ratio {m:.3g} ({r['min']:.3g}..{r['max']:.3g}), muster "
                         f"{how:.1f}x {'faster' if r.get('muster_faster') else 'slower'}")
            cells.append(cell)
        print(f"| {label} | {span(mine, mine['unit']) if mine else 'not run'} | "
              + " | ".join(cells) + " |")
    print()


def main():
    doc = json.load(open(sys.argv[1]))
    m = doc["machine"]
    print(f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['os']}, release build; "
          f"{doc['runs']} runs, scale {doc['scale']}, {doc['wall_s']:.0f} s wall.\n")
    for w in doc["workloads"]:
        print(f"### {w['id']}: {w.get('description', '')}\n")
        print("| figure | median | min..max | unit |")
        print("|---|---|---|---|")
        for f in w["figures"]:
            u = f.get("unit", "")
            print(f"| `{f['name']}` | **{fmt(f['median'], u)}** | "
                  f"{fmt(f['min'], u)}..{fmt(f['max'], u)} | {u} |")
        for r in w.get("ratios", []):
            print(f"| ratio `{r['name']}` | {r['median']:.2f}x | "
                  f"{r['min']:.2f}..{r['max']:.2f} | x |")
        for p in w.get("peers", []):
            who = f"{p['peer']} {p['version']}"
            for f in p["figures"]:
                u = f.get("unit", "")
                print(f"| {who}: `{f['name']}` | **{fmt(f['median'], u)}** | "
                      f"{fmt(f['min'], u)}..{fmt(f['max'], u)} | {u} |")
            for r in p.get("ratios", []):
                m = r["median"]
                how = m if m >= 1 else 1 / m
                verdict = "faster" if r.get("muster_faster") else "slower"
                print(f"| ratio `{r['numerator']}` / {who} `{r['denominator']}` | "
                      f"{m:.3g}x (muster {how:.1f}x {verdict}) | "
                      f"{r['min']:.3g}..{r['max']:.3g} | x |")
        for name, why in w.get("not_measured", []) if isinstance(w.get("not_measured"), list) else []:
            print(f"| `{name}` | not measured | {why} | |")
        print()
    peers_summary(doc)
    print("### The project's targets (see [docs/workloads.md](docs/workloads.md#targets))\n")
    print("| target | measured (median) | verdict |")
    print("|---|---|---|")
    for w in doc["workloads"]:
        for t in w.get("targets", []):
            print(f"| {t['target']} | {t['median']:.2f} | **{t['status']}** "
                  f"({t['median_over_bound']:.2f} of the bound) |")


if __name__ == "__main__":
    main()
