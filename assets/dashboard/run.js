// muster dashboard: the run page's parts beyond the timeline: the workflow graph with the
// run on it (graph.js draws it), each step's duration, verdict and key output fields, and
// each gate's decision (who decided, the note in full).
//
// It reads the run document (`GET /v1/runs/{id}`: `path`, `progress`, `steps`, `gates`)
// and the workflow's shape (`GET /v1/workflows/{name}`, fetched once per workflow), through
// the page's own API function. Every string from the server is set as text.
"use strict";

(function () {
  const LIST_SHOWN = 20; // items of an output's list shown
  const shapes = new Map(); // workflow name -> {shape} | {error} | {loading: true}
  let ctx = null; // {api(method, path), changed()} from app.js

  // The page's one definition of these helpers is app.js's (`window.muster`): this file
  // loads first but draws only when app.js asks it to, so they are looked up when called.
  const str = (v) => window.muster.str(v);
  const el = (...args) => window.muster.el(...args);
  const json = (v) => window.muster.json(v);


  // 850 ms, 4.2 s, 3 min 05 s, 2 h 01 min.
  function fmtDur(ms) {
    const n = Number(ms);
    if (!isFinite(n) || n < 0) return "";
    if (n < 1000) return Math.round(n) + " ms";
    if (n < 60000) return (n / 1000).toFixed(n < 10000 ? 1 : 0) + " s";
    const s = Math.floor(n / 1000);
    if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
  }

  // The deciding token's name in front of a journaled decision (`by NAME: NOTE`), as the
  // node writes it (docs/api.md); the run document says it as `decided.by`.
  function attribution(reason) {
    const m = /^by ([A-Za-z0-9_.@-]{1,64})(?:: ([\s\S]*))?$/.exec(str(reason));
    return m ? { by: m[1], note: m[2] || "" } : { by: null, note: str(reason) };
  }

  function init(c) {
    ctx = c;
  }

  function shapeOf(name) {
    if (!name || !ctx) return null;
    const got = shapes.get(name);
    if (got) return got;
    const entry = { loading: true };
    shapes.set(name, entry);
    ctx.api("GET", "/v1/workflows/" + encodeURIComponent(name)).then(
      (shape) => {
        shapes.set(name, { shape });
        ctx.changed();
      },
      (e) => {
        // A workflow the node no longer loads (or a refused request): said, and asked
        // again when the run is opened again.
        shapes.set(name, { error: e.message });
        setTimeout(() => shapes.delete(name), 10000);
        ctx.changed();
      },
    );
    return entry;
  }

  // The steps the run entered: the document's `path`, then those its stream announced
  // since the document was read.
  function pathOf(d, timeline) {
    const path = Array.isArray(d.path) ? d.path.slice() : [];
    const have = new Set(path.map((p) => str(p.step) + "#" + str(p.visit)));
    for (const ev of timeline || []) {
      if (ev.type !== "step_entered") continue;
      const k = str(ev.step) + "#" + str(ev.visit);
      if (!have.has(k)) {
        have.add(k);
        path.push({ step: ev.step, visit: ev.visit, at_ms: ev.at_ms });
      }
    }
    return path;
  }

  let drawn = { key: null, box: null };
  // The workflow graph of run `d` into `box`, redrawn only when what it shows changed.
  function renderGraph(box, d, timeline, status) {
    const name = str(d && d.workflow);
    const got = shapeOf(name);
    const path = pathOf(d || {}, timeline);
    const run = { id: d && (d.run || d.id), path, status, gate: d && d.gate, progress: d && d.progress };
    const key = JSON.stringify([run.id, name, got && !got.loading && !got.error, got && got.error, path.length, status, run.gate, (run.progress || []).length]);
    if (drawn.key === key && drawn.box === box && box.firstChild) return;
    drawn = { key, box };
    if (!got) return box.replaceChildren(el("div", { class: "muted", text: "loading…" }));
    if (got.loading) return box.replaceChildren(el("div", { class: "muted", text: "loading workflow " + name + "…" }));
    if (got.error) return box.replaceChildren(el("div", { class: "muted", text: "workflow " + name + ": " + got.error }));
    box.setAttribute("data-workflow", name);
    box.replaceChildren(window.MusterGraph.draw(got.shape, run));
  }

  // Each step visit's `progress` entry (verdict, duration), matched to the n-th task of
  // that step in `steps`.
  function progressIndex(d) {
    const out = new Map();
    const n = new Map();
    for (const p of Array.isArray(d && d.progress) ? d.progress : []) {
      const s = str(p.step);
      const i = (n.get(s) || 0) + 1;
      n.set(s, i);
      out.set(s + "#" + i, p);
    }
    return out;
  }

  // A task step's time: from submission to its end, or so far.
  function stepDuration(s, now) {
    const from = Number(s.submitted_ms);
    if (!from) return "";
    if (s.ended_ms) return fmtDur(Number(s.ended_ms) - from);
    return s.status === "running" ? fmtDur(now - from) + " so far" : "";
  }

  // One item of an output's list in words: a failure's test and message, a finding's
  // rule and file, else the item's JSON on one line.
  function itemText(x) {
    if (x === null || typeof x !== "object") return str(x);
    const head = str(x.test || x.rule || x.name || x.title || x.id || x.file || "");
    const rest = [x.message, x.detail, x.severity, x.file && x.file !== head ? x.file + (x.line ? ":" + x.line : "") : null].filter((v) => v !== undefined && v !== null && v !== "").map(str);
    const t = [head, ...rest].filter(Boolean).join(" — ");
    if (t) return t;
    try {
      return JSON.stringify(x);
    } catch (_) {
      return str(x);
    }
  }

  // An output's key fields, rendered: numbers, booleans and short text as `name value`,
  // lists as lists (a test step's failures, a review's findings), nested objects left
  // to the raw JSON, which is one click away.
  function output(o) {
    if (o === undefined) return null;
    const box = el("div", { class: "out", "data-testid": "step-output" });
    if (o && typeof o === "object" && !Array.isArray(o)) {
      const facts = [];
      const lists = [];
      for (const [k, v] of Object.entries(o)) {
        if (typeof v === "number" || typeof v === "boolean") facts.push(k + " " + v);
        else if (typeof v === "string" && v.length <= 60 && !v.includes("\n")) facts.push(k + " " + v);
        else if (Array.isArray(v)) lists.push([k, v]);
      }
      if (facts.length) box.append(el("div", { class: "facts", text: facts.join(" · ") }));
      for (const [k, v] of lists) {
        const ul = el("ul", { class: "out-list", "data-testid": "step-output-list", "data-field": k });
        for (const x of v.slice(0, LIST_SHOWN)) ul.append(el("li", { text: itemText(x) }));
        if (v.length > LIST_SHOWN) ul.append(el("li", { class: "muted", text: "and " + (v.length - LIST_SHOWN) + " more" }));
        box.append(el("div", { class: "facts" }, el("span", { text: k + " (" + v.length + ")" + (v.length ? ":" : "") })), ul);
      }
    }
    box.append(el("details", null, el("summary", null, "raw JSON"), el("pre", { text: json(o) })));
    return box;
  }

  // The gates the run reached and how each was decided: by whom (the deciding token's
  // name) and the note in full.
  function renderDecisions(box, d) {
    const gates = Array.isArray(d && d.gates) ? d.gates : [];
    const rows = [];
    for (const g of gates) {
      const dec = g.decided;
      if (!dec || typeof dec !== "object") continue;
      const who = dec.by ? { by: str(dec.by), note: attribution(dec.note).by === str(dec.by) ? attribution(dec.note).note : str(dec.note) } : attribution(dec.note);
      rows.push(
        el(
          "div",
          { class: "decision", "data-testid": "gate-decision", "data-gate": str(g.gate), "data-approved": dec.approved ? "true" : "false" },
          el("span", { class: "mono", text: "gate " + str(g.gate) }),
          " ",
          el("span", { class: "st " + (dec.approved ? "st-ok" : "st-fail"), text: dec.approved ? "approved" : "rejected" }),
          " ",
          el("span", { "data-testid": "gate-decided-by", text: who.by ? "by " + who.by : "(no name)" }),
          g.question ? el("div", { class: "muted", text: str(g.question) }) : null,
          who.note ? el("div", { class: "note-full", "data-testid": "gate-decided-note", text: who.note }) : null,
        ),
      );
    }
    box.hidden = !rows.length;
    box.replaceChildren(...rows);
  }

  window.MusterRun = { init, renderGraph, renderDecisions, progressIndex, stepDuration, output, fmtDur, attribution };
})();
