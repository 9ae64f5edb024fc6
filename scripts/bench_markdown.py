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
    print("### Targets of DESIGN.md\n")
    print("| target | measured (median) | verdict |")
    print("|---|---|---|")
    for w in doc["workloads"]:
        for t in w.get("targets", []):
            print(f"| {t['target']} | {t['median']:.2f} | **{t['status']}** "
                  f"({t['median_over_bound']:.2f} of the bound) |")


if __name__ == "__main__":
    main()
