// muster dashboard: the metrics view (docs/dashboard.md, "Metrics"): the node's last hour
// in ten-second samples (`GET /v1/metrics/history`, from the node's own metrics: no
// Prometheus needed), drawn as small inline SVG charts: tasks per second, the task
// latency's p50 and p99, and failed attempts and reassignments by capability.
//
// As in app.js, every string from the server (a capability name) is set as text.
"use strict";

(function () {
  const m = window.muster;
  if (!m) return;
  const { api, el, svg, str } = m;
  const $ = (id) => document.getElementById(id);
  const W = 320;
  const H = 80;
  const EVERY = 10000; // ms between two reads: one sample
  const SERIES = 6; // lines a chart draws; the other capabilities are summed as "others"

  // A chart of `series` ([{name, values}]) over the samples, with its caption.
  function chart(testid, title, unit, series) {
    const n = Math.max(1, ...series.map((s) => s.values.length));
    const max = Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
    const top = max > 0 ? max : 1;
    const x = (i) => (n === 1 ? W / 2 : (i * (W - 4)) / (n - 1) + 2);
    const y = (v) => H - 4 - (v / top) * (H - 10);
    const g = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": title });
    g.append(svg("line", { class: "axis", x1: 0, y1: H - 4, x2: W, y2: H - 4 }));
    series.forEach((s, k) => {
      const pts = [];
      s.values.forEach((v, i) => {
        if (v !== null && v !== undefined) pts.push(x(i).toFixed(1) + "," + y(v).toFixed(1));
      });
      if (pts.length === 1) {
        // One sample so far: a dot, as a line needs two.
        const [cx, cy] = pts[0].split(",");
        g.append(svg("circle", { class: "s" + (k % SERIES), cx, cy, r: 2.5, "data-series": s.name }));
        pts.push(pts[0]);
      }
      if (pts.length) g.append(svg("polyline", { class: "s" + (k % SERIES), points: pts.join(" "), "data-series": s.name }));
    });
    const last = (s) => {
      for (let i = s.values.length - 1; i >= 0; i--) if (s.values[i] !== null) return s.values[i];
      return null;
    };
    const legend = series.map((s, k) =>
      el("span", { class: "k" + (k % SERIES), "data-testid": "legend" }, "■ ", str(s.name) + " " + (last(s) === null ? "–" : fmt(last(s)) + unit) + "  "),
    );
    return el(
      "figure",
      { class: "chart", "data-testid": testid, "data-max": String(max) },
      g,
      el("figcaption", null, el("b", { text: title }), " (max " + fmt(max) + unit + ") ", ...legend),
    );
  }

  function fmt(v) {
    return v >= 100 ? String(Math.round(v)) : String(Math.round(v * 100) / 100);
  }

  // Per-capability series of `key` ("failures" / "reassignments"): the busiest first, the
  // rest summed, so a node with many capabilities still draws a few lines.
  function byCapability(samples, key) {
    const totals = new Map();
    for (const s of samples) for (const [c, n] of Object.entries(s[key] || {})) totals.set(c, (totals.get(c) || 0) + Number(n));
    const names = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a));
    const shown = names.slice(0, SERIES - 1);
    const rest = names.slice(SERIES - 1);
    const series = shown.map((c) => ({ name: c, values: samples.map((s) => Number((s[key] || {})[c] || 0)) }));
    if (rest.length) series.push({ name: "others (" + rest.length + ")", values: samples.map((s) => rest.reduce((a, c) => a + Number((s[key] || {})[c] || 0), 0)) });
    if (!series.length) series.push({ name: "none", values: samples.map(() => 0) });
    return series;
  }

  async function draw() {
    const panel = $("metrics-panel");
    let doc;
    try {
      doc = await api("GET", "/v1/metrics/history");
    } catch (e) {
      panel.replaceChildren(el("h2", { text: "Metrics" }), el("div", { class: "muted", text: "metrics: " + e.message }));
      return;
    }
    const samples = Array.isArray(doc && doc.samples) ? doc.samples : [];
    const minutes = Math.round((samples.length * Number(doc.interval_ms || EVERY)) / 60000);
    const charts = el(
      "div",
      { class: "charts" },
      chart("chart-tasks", "tasks/s", "", [{ name: "completed", values: samples.map((s) => Number(s.tasks_per_s) || 0) }]),
      chart("chart-latency", "task latency", " ms", [
        { name: "p50", values: samples.map((s) => (s.p50_ms === null ? null : Number(s.p50_ms))) },
        { name: "p99", values: samples.map((s) => (s.p99_ms === null ? null : Number(s.p99_ms))) },
      ]),
      chart("chart-failures", "failed attempts by capability", "", byCapability(samples, "failures")),
      chart("chart-reassignments", "reassignments by capability", "", byCapability(samples, "reassignments")),
    );
    panel.replaceChildren(
      el("h2", null, "Metrics ", el("span", { class: "count", "data-testid": "metrics-span", text: samples.length + (samples.length === 1 ? " sample of " : " samples of ") + Math.round(Number(doc.interval_ms || EVERY) / 1000) + " s (" + minutes + " min)" })),
      charts,
    );
    panel.setAttribute("data-samples", String(samples.length));
  }

  let drawing = false;
  function tick() {
    if (drawing || document.hidden) return;
    drawing = true;
    draw().finally(() => {
      drawing = false;
    });
  }
  m.onRole(tick);
  setInterval(tick, EVERY);
})();
