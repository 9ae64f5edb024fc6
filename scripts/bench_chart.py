#!/usr/bin/env python3
"""Draws docs/bench.svg from the JSON of `muster bench --json` (Python 3 stdlib only).

Usage: target/release/muster bench --workload all --json > bench.json
       python3 scripts/bench_chart.py bench.json [docs/bench.svg]

One panel per comparison, log-scale horizontal bars: muster's median with a min..max
whisker, the raw tokio and raw actix baselines measured in the same run, and (with
`muster bench --peers`) every peer measured in the same run, with its own whisker.
"""
import json
import math
import sys
from xml.sax.saxutils import escape

PANELS = [
    # (workload, title, unit, [(label, figure name or ("peers", peer figure name)), ...])
    ("W1", "W1 handoff chain: µs per handoff (lower is better)", "µs", [
        ("muster workflow", "muster_workflow_us_per_handoff"),
        ("muster delegate x3", "muster_delegate_us_per_handoff"),
        ("muster delegate, journal discarded", "muster_delegate_journal_discarded_us_per_handoff"),
        ("raw tokio", "raw_tokio_us_per_handoff"),
        ("raw actix", "raw_actix_us_per_handoff"),
        ("peers", ("peers", "us_per_handoff")),
    ]),
    ("W2", "W2 fan-out, 1,000 agents: tasks/s (higher is better)", "1/s", [
        ("muster", "muster_tasks_per_s"),
        ("raw tokio", "raw_tokio_tasks_per_s"),
        ("raw actix", "raw_actix_tasks_per_s"),
        ("peers", ("peers", "tasks_per_s")),
    ]),
    ("W3", "W3 request-response p50: µs (lower is better)", "µs", [
        ("muster", "muster_p50_us"),
        ("raw tokio", "raw_tokio_p50_us"),
        ("raw actix", "raw_actix_p50_us"),
        ("peers", ("peers", "p50_us")),
    ]),
    ("W3", "W3 request-response p99: µs (lower is better)", "µs", [
        ("muster", "muster_p99_us"),
        ("raw tokio", "raw_tokio_p99_us"),
        ("raw actix", "raw_actix_p99_us"),
        ("peers", ("peers", "p99_us")),
    ]),
    ("W4", "W4 crash to task running elsewhere, p50: µs (lower is better)", "µs", [
        ("muster", "muster_recovery_p50_us"),
        ("raw tokio", "raw_tokio_recovery_p50_us"),
        ("raw actix", "raw_actix_recovery_p50_us"),
    ]),
]

COLORS = {"muster": "#2b6cb0", "raw": "#718096", "peer": "#dd6b20"}
W, LABEL_W, BAR_H, GAP, TITLE_H = 900, 260, 18, 6, 34


def rows_for(doc, workload, specs):
    w = next((w for w in doc["workloads"] if w["id"] == workload), None)
    if w is None:
        return []
    figs = {f["name"]: f for f in w["figures"]}
    peers = w.get("peers", [])
    rows = []
    for label, ref in specs:
        if isinstance(ref, tuple):
            # every peer measured in this run, with its median and min..max
            for p in peers:
                f = next((f for f in p["figures"] if f["name"] == ref[1]), None)
                if f and f["median"] is not None:
                    rows.append((f'{p["peer"]} {p["version"]}', f["median"], f["min"],
                                 f["max"], "peer"))
        elif ref in figs and figs[ref]["median"] is not None:
            f = figs[ref]
            kind = "raw" if label.startswith("raw") else "muster"
            rows.append((label, f["median"], f["min"], f["max"], kind))
    return rows


def fmt(v):
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "-"
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/bench.svg"
    doc = json.load(sys.stdin if src == "-" else open(src, encoding="utf-8"))
    m = doc["machine"]
    parts, y = [], 50
    for workload, title, unit, specs in PANELS:
        rows = rows_for(doc, workload, specs)
        if not rows:
            continue
        vals = [v for r in rows for v in (r[1], r[2], r[3]) if v and v > 0]
        lo = 10 ** math.floor(math.log10(min(vals)))
        hi = 10 ** math.ceil(math.log10(max(vals)))
        span = math.log10(hi) - math.log10(lo) or 1
        plot_w = W - LABEL_W - 90

        def x(v):
            return LABEL_W + plot_w * (math.log10(max(v, lo)) - math.log10(lo)) / span

        parts.append(f'<text x="10" y="{y + 16}" font-weight="bold">{escape(title)}</text>')
        y += TITLE_H
        top = y
        for label, v, vmin, vmax, kind in rows:
            fill = COLORS[kind]
            extra = ' fill-opacity="0.55" stroke="#dd6b20"' if kind == "peer" else ""
            parts.append(f'<text x="{LABEL_W - 8}" y="{y + 13}" text-anchor="end">{escape(label)}</text>')
            parts.append(f'<rect x="{LABEL_W}" y="{y}" width="{max(x(v) - LABEL_W, 1):.1f}" height="{BAR_H}" fill="{fill}"{extra}/>')
            if vmin is not None and vmax is not None:
                parts.append(f'<line x1="{x(vmin):.1f}" x2="{x(vmax):.1f}" y1="{y + BAR_H / 2}" y2="{y + BAR_H / 2}" stroke="black"/>')
                for e in (vmin, vmax):
                    parts.append(f'<line x1="{x(e):.1f}" x2="{x(e):.1f}" y1="{y + 3}" y2="{y + BAR_H - 3}" stroke="black"/>')
            note = ""
            parts.append(f'<text x="{max(x(v), x(vmax or v)) + 6:.1f}" y="{y + 13}">{fmt(v)} {escape(unit)}{note}</text>')
            y += BAR_H + GAP
        decade = lo
        while decade <= hi:
            gx = x(decade)
            parts.append(f'<line x1="{gx:.1f}" x2="{gx:.1f}" y1="{top - 4}" y2="{y}" stroke="#cbd5e0" stroke-dasharray="2,3"/>')
            parts.append(f'<text x="{gx:.1f}" y="{y + 12}" text-anchor="middle" font-size="10" fill="#4a5568">{fmt(decade)}</text>')
            decade *= 10
        y += 30
    header = (f'muster bench: median of {doc["runs"]} run(s), whiskers min..max; '
              f'{m["nproc"]} CPU(s), {m["cpu_model"]}; scale {doc["scale"]}; '
              f'peers (if any) measured in the same run')
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{y + 10}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="24" font-size="13">{escape(header)}</text>'] + parts + ["</svg>"]
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(svg) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
