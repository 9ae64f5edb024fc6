// muster dashboard: a workflow drawn as a graph, with a run's path on it.
//
// Input: the workflow's shape (`GET /v1/workflows/{name}`, docs/api.md) and what a run did
// (the steps it entered, in order; its status and where it stopped). Output: an inline
// SVG element, built here with createElementNS (no library, nothing loaded).
//
// Layout: layers by the longest path from `start` over the edges that go forward (an edge
// back to a step on the current depth-first path is a back-edge). A parallel step is one
// box holding its branches. Edges between adjacent layers are curves; an edge that skips
// layers runs in a lane above the boxes; a back-edge runs in a lane below them. Every
// label is shortened; the full condition is the edge's tooltip.
//
// Every string from the server is set as text (textContent, setAttribute), never parsed.
"use strict";

(function () {
  const MAX_STEPS = 200; // a workflow bigger than this is described, not drawn
  const W = 140; // a box's width
  const H = 38; // a task's or gate's height
  const END_W = 84;
  const GAP = 150; // between layers: room for a label
  const VGAP = 22; // between boxes of a layer
  const BRANCH_H = 26;
  const LANE = 18; // between two routed lanes
  const LABEL = 30; // characters of a condition shown on its edge

  // The page's one definition of these helpers is app.js's (`window.muster`): this file
  // loads first but draws only when app.js asks it to, so they are looked up when called.
  const svg = (...args) => window.muster.svg(...args);
  const str = (v) => window.muster.str(v);

  function short(s, n) {
    s = str(s).replace(/\s+/g, " ").trim();
    return s.length > n ? s.slice(0, n - 1) + "…" : s;
  }

  // A CSS-class-safe token.
  function cls(s) {
    return str(s).toLowerCase().replace(/[^a-z0-9_-]/g, "");
  }

  // What a run did, for the drawing: visits per step, each edge's traversals, and where
  // the run is. `run`: {path: [{step, visit}], status, gate, step, progress: [{step}]}.
  function trace(shape, run, branchOf) {
    const visits = new Map();
    const path = Array.isArray(run && run.path) ? run.path : [];
    for (const p of path) visits.set(str(p.step), (visits.get(str(p.step)) || 0) + 1);
    const top = path.map((p) => str(p.step)).filter((s) => !branchOf.has(s));
    const edges = shape.edges || [];
    const kinds = new Set(["done", "fail"]);
    const stepKind = new Map((shape.steps || []).map((s) => [str(s.name), str(s.kind)]));
    const status = str(run && run.status);
    const ended = ["completed", "failed", "cancelled"].includes(status);
    // An end the run reached without entering a step of that name (a gate's default).
    if (ended && top.length && !kinds.has(stepKind.get(top[top.length - 1]))) {
      const end = status === "completed" ? "done" : "fail";
      const from = top[top.length - 1];
      const implicit = (shape.steps || []).some((s) => str(s.name) === end && s.implicit);
      const reachable = edges.some((e) => str(e.to) === end && (str(e.from) === from || branchOf.get(str(e.from)) === from));
      if (implicit && reachable) {
        top.push(end);
        visits.set(end, 1);
      }
    }
    const taken = new Map(); // edge index -> times taken
    for (let i = 1; i < top.length; i++) {
      const a = top[i - 1];
      const b = top[i];
      let k = edges.findIndex((e) => e.kind !== "branch" && str(e.from) === a && str(e.to) === b);
      if (k < 0) k = edges.findIndex((e) => e.kind !== "branch" && branchOf.get(str(e.from)) === a && str(e.to) === b);
      if (k >= 0) taken.set(k, (taken.get(k) || 0) + 1);
    }
    edges.forEach((e, k) => {
      if (e.kind === "branch" && visits.get(str(e.to))) taken.set(k, visits.get(str(e.to)));
    });
    // Where the run is: a gate it waits at, the steps it works on, or the end it reached.
    const here = new Map(); // step -> "running" | "waiting" | "completed" | "failed"
    const last = top.length ? top[top.length - 1] : str(shape.start);
    if (status === "waiting") here.set(str(run.gate || last), "waiting");
    else if (ended) here.set(last, status === "completed" ? "completed" : "failed");
    else if (status === "running" || status === "unfinished") {
      here.set(last, "running");
      // The branches of a parallel step still at work: entered more often than ended.
      const done = new Map();
      for (const p of Array.isArray(run.progress) ? run.progress : []) done.set(str(p.step), (done.get(str(p.step)) || 0) + 1);
      for (const [b, parent] of branchOf) {
        if (parent === last && (visits.get(b) || 0) > (done.get(b) || 0)) here.set(b, "running");
      }
    }
    return { visits, taken, here };
  }

  function layout(shape) {
    const steps = (shape.steps || []).slice(0, MAX_STEPS);
    const byName = new Map(steps.map((s) => [str(s.name), s]));
    const branchOf = new Map();
    for (const s of steps) if (s.kind === "parallel") for (const b of s.branches || []) if (byName.has(str(b))) branchOf.set(str(b), str(s.name));
    const anchor = (n) => branchOf.get(n) || n;
    const top = steps.filter((s) => !branchOf.has(str(s.name))).map((s) => str(s.name));
    const edges = (shape.edges || []).filter((e) => byName.has(str(e.from)) && byName.has(str(e.to)));
    const out = new Map(top.map((n) => [n, []]));
    edges.forEach((e, k) => {
      if (e.kind === "branch") return;
      const a = anchor(str(e.from));
      const b = anchor(str(e.to));
      if (out.has(a)) out.get(a).push({ to: b, k });
    });
    // Back-edges: to a step on the depth-first path (or to itself).
    const back = new Set();
    const onPath = new Set();
    const seen = new Set();
    const order = []; // first visit order, for a stable order within a layer
    const dfs = (n, depth) => {
      if (depth > MAX_STEPS) return;
      seen.add(n);
      onPath.add(n);
      order.push(n);
      for (const { to, k } of out.get(n) || []) {
        if (onPath.has(to)) back.add(k);
        else if (!seen.has(to)) dfs(to, depth + 1);
      }
      onPath.delete(n);
    };
    if (out.has(str(shape.start))) dfs(str(shape.start), 0);
    for (const n of top) if (!seen.has(n)) dfs(n, 0);
    // Layers: the longest forward path from the start.
    const depth = new Map(top.map((n) => [n, 0]));
    for (let round = 0; round < top.length; round++) {
      let moved = false;
      for (const n of top) {
        for (const { to, k } of out.get(n)) {
          if (back.has(k) || to === n) continue;
          if (depth.get(to) < depth.get(n) + 1) {
            depth.set(to, depth.get(n) + 1);
            moved = true;
          }
        }
      }
      if (!moved) break;
    }
    const layers = [];
    for (const n of order) {
      const d = depth.get(n);
      (layers[d] = layers[d] || []).push(n);
    }
    // Box sizes, then positions: each layer a column centred on one midline.
    const size = new Map();
    for (const n of top) {
      const s = byName.get(n);
      if (s.kind === "parallel") {
        const bs = (s.branches || []).filter((b) => byName.has(str(b)));
        size.set(n, { w: W + 16, h: 24 + bs.length * (BRANCH_H + 6) + 4 });
      } else if (s.kind === "done" || s.kind === "fail") size.set(n, { w: END_W, h: H - 8 });
      else size.set(n, { w: W, h: H });
    }
    const colH = layers.map((l) => (l || []).reduce((h, n) => h + size.get(n).h, 0) + Math.max(0, (l || []).length - 1) * VGAP);
    const maxH = Math.max(H, ...colH);
    const kinds = edges.map((e, k) => {
      if (e.kind === "branch") return "branch";
      if (back.has(k) || anchor(str(e.from)) === anchor(str(e.to))) return "back";
      const da = depth.get(anchor(str(e.from)));
      const db = depth.get(anchor(str(e.to)));
      return db === da + 1 ? "near" : "over";
    });
    const overN = kinds.filter((k) => k === "over").length;
    const backN = kinds.filter((k) => k === "back").length;
    const top0 = 16 + overN * LANE;
    const colW = W + 16;
    const pos = new Map();
    layers.forEach((l, d) => {
      let y = top0 + (maxH - colH[d]) / 2;
      for (const n of l || []) {
        const { w, h } = size.get(n);
        const x = 20 + d * (colW + GAP) + (colW - w) / 2;
        pos.set(n, { x, y, w, h });
        const s = byName.get(n);
        if (s.kind === "parallel") {
          let by = y + 24;
          for (const b of s.branches || []) {
            if (!byName.has(str(b))) continue;
            pos.set(str(b), { x: x + 8, y: by, w: w - 16, h: BRANCH_H });
            by += BRANCH_H + 6;
          }
        }
        y += h + VGAP;
      }
    });
    const width = 40 + layers.length * colW + Math.max(0, layers.length - 1) * GAP;
    const bottom0 = top0 + maxH + 12;
    const height = bottom0 + backN * LANE + 14;
    return { steps, byName, branchOf, edges, kinds, pos, top0, bottom0, width, height, truncated: (shape.steps || []).length > MAX_STEPS };
  }

  // An edge's label: its condition (shortened) and its bound, with the visits so far.
  function labelOf(e, visits, taken, back) {
    let text = "";
    let full = str(e.from) + " → " + str(e.to);
    switch (e.kind) {
      case "rule":
        text = e.when === null || e.when === undefined ? "otherwise" : short(e.when, LABEL);
        full += e.when === null || e.when === undefined ? ": otherwise" : " when " + str(e.when);
        break;
      case "exhausted":
        text = "exhausted";
        full += " when its task is exhausted (escalated)";
        break;
      case "approve":
      case "reject":
        text = e.kind;
        full += " on " + e.kind;
        break;
      default:
        break;
    }
    let count = "";
    if (e.max_visits !== null && e.max_visits !== undefined) {
      count = str(e.to) + " ×" + (visits.get(str(e.to)) || 0) + " of " + e.max_visits;
      full += " (at most " + e.max_visits + " visits of " + str(e.to) + "; " + (visits.get(str(e.to)) || 0) + " so far)";
    } else if (taken && back) {
      count = "×" + taken;
    }
    if (taken) full += "; taken " + taken + (taken === 1 ? " time" : " times") + " by this run";
    return { text, count, full };
  }

  function arrowHead(x, y, dir) {
    // dir: "right", "down", "up"
    const d = dir === "right" ? "M" + x + " " + y + " l-8 -4 l0 8 z" : dir === "down" ? "M" + x + " " + y + " l-4 -8 l8 0 z" : "M" + x + " " + y + " l-4 8 l8 0 z";
    return svg("path", { d, class: "head" });
  }

  // The graph of `shape` with `run` on it (either may be partial); returns an <svg>.
  function draw(shape, run) {
    const L = layout(shape || {});
    const { visits, taken, here } = trace(shape || {}, run || {}, L.branchOf);
    const s = svg("svg", { width: L.width, height: L.height, "data-testid": "graph-svg", role: "img", class: "graph" });
    s.append(svg("title", {}, "workflow " + str(shape && shape.name) + (run && run.id ? " with run " + run.id : "")));
    let over = 0;
    let under = 0;
    const labels = [];
    L.edges.forEach((e, k) => {
      const kind = L.kinds[k];
      if (kind === "branch") return;
      const a = L.pos.get(str(e.from));
      const b = L.pos.get(str(e.to));
      if (!a || !b) return;
      const n = taken.get(k) || 0;
      const lab = labelOf(e, visits, n, kind === "back");
      const g = svg("g", {
        class: "edge e-" + cls(e.kind) + (n ? " taken" : "") + (kind === "back" ? " back" : ""),
        "data-testid": "graph-edge",
        "data-from": str(e.from),
        "data-to": str(e.to),
        "data-kind": str(e.kind),
        "data-taken": n,
      });
      g.append(svg("title", {}, lab.full));
      let d;
      let lx;
      let ly;
      if (kind === "near") {
        const x1 = a.x + a.w;
        const y1 = a.y + a.h / 2;
        const x2 = b.x - 2;
        const y2 = b.y + b.h / 2;
        const mx = (x1 + x2) / 2;
        d = "M" + x1 + " " + y1 + " C" + mx + " " + y1 + " " + mx + " " + y2 + " " + x2 + " " + y2;
        g.append(svg("path", { d, class: "line" }));
        g.append(arrowHead(x2 + 2, y2, "right"));
        lx = mx;
        ly = (y1 + y2) / 2 - 4;
      } else if (kind === "over") {
        // Up into a lane above the boxes, across, down the gap before the target's
        // column and into its side (not through the boxes above it in that column).
        const y = L.top0 - 8 - over * LANE;
        const x1 = a.x + a.w * 0.65;
        const x2 = b.x - 14 - (over % 3) * 5;
        const y2 = b.y + b.h / 2;
        over += 1;
        d = "M" + x1 + " " + a.y + " L" + x1 + " " + y + " L" + x2 + " " + y + " L" + x2 + " " + y2 + " L" + (b.x - 2) + " " + y2;
        g.append(svg("path", { d, class: "line" }));
        g.append(arrowHead(b.x, y2, "right"));
        lx = (x1 + x2) / 2;
        ly = y - 3;
      } else {
        const y = L.bottom0 + 6 + under * LANE;
        under += 1;
        const x1 = a.x + a.w * 0.35;
        const x2 = b.x + b.w * 0.65;
        d = "M" + x1 + " " + (a.y + a.h) + " L" + x1 + " " + y + " L" + x2 + " " + y + " L" + x2 + " " + (b.y + b.h + 2);
        g.append(svg("path", { d, class: "line" }));
        g.append(arrowHead(x2, b.y + b.h, "up"));
        lx = (x1 + x2) / 2;
        ly = y - 3;
      }
      // A branch's exhausted edge is left unlabelled (its siblings say the same); its
      // tooltip says it.
      const text = [e.kind === "exhausted" && L.branchOf.has(str(e.from)) ? "" : lab.text, lab.count].filter(Boolean).join(" · ");
      if (text) labels.push({ x: lx, y: ly, text, full: lab.full, from: str(e.from), to: str(e.to), taken: n > 0 });
      s.append(g);
    });
    // Boxes after edges, labels last: drawn over the lines they name.
    for (const st of L.steps) {
      const name = str(st.name);
      const p = L.pos.get(name);
      if (!p) continue;
      const v = visits.get(name) || 0;
      const at = here.get(name);
      const g = svg("g", {
        class: "node k-" + cls(st.kind) + (v ? " visited" : "") + (at ? " here here-" + cls(at) : "") + (L.branchOf.has(name) ? " branch" : ""),
        "data-testid": "graph-node",
        "data-step": name,
        "data-kind": str(st.kind),
        "data-visits": v,
        "data-here": at || "",
      });
      const tip = [name + " (" + str(st.kind) + ")"];
      if (st.description) tip.push(str(st.description));
      if (st.capability) tip.push("capability " + str(st.capability));
      if (st.timeout_ms) tip.push("timeout " + st.timeout_ms + " ms");
      if (st.attempts) tip.push(st.attempts + " attempts");
      if (st.question) tip.push("asks: " + str(st.question));
      if (v) tip.push("entered " + v + (v === 1 ? " time" : " times") + " by this run");
      if (at) tip.push("the run: " + at);
      g.append(svg("title", {}, tip.join("\n")));
      const end = st.kind === "done" || st.kind === "fail";
      if (st.kind === "gate") {
        const cx = p.x + p.w / 2;
        const cy = p.y + p.h / 2;
        g.append(svg("path", { class: "box", d: "M" + (p.x + 10) + " " + p.y + " L" + (p.x + p.w - 10) + " " + p.y + " L" + (p.x + p.w) + " " + cy + " L" + (p.x + p.w - 10) + " " + (p.y + p.h) + " L" + (p.x + 10) + " " + (p.y + p.h) + " L" + p.x + " " + cy + " Z" }));
        g.append(svg("text", { x: cx, y: p.y + 16, "text-anchor": "middle", class: "name" }, short(name, 18)));
        g.append(svg("text", { x: cx, y: p.y + 30, "text-anchor": "middle", class: "sub" }, "gate"));
      } else {
        g.append(svg("rect", { class: "box", x: p.x, y: p.y, width: p.w, height: p.h, rx: end ? p.h / 2 : 4 }));
        if (st.kind === "parallel") {
          g.append(svg("text", { x: p.x + 8, y: p.y + 15, class: "name" }, short(name, 16)));
          g.append(svg("text", { x: p.x + p.w - 8, y: p.y + 15, "text-anchor": "end", class: "sub" }, "parallel"));
        } else if (end) {
          g.append(svg("text", { x: p.x + p.w / 2, y: p.y + p.h / 2 + 4, "text-anchor": "middle", class: "name" }, short(name, 11)));
        } else if (L.branchOf.has(name)) {
          g.append(svg("text", { x: p.x + 8, y: p.y + 17, class: "name" }, short(name, 12)));
          g.append(svg("text", { x: p.x + p.w - 8, y: p.y + 17, "text-anchor": "end", class: "sub" }, short(st.capability, 14)));
        } else {
          g.append(svg("text", { x: p.x + 8, y: p.y + 16, class: "name" }, short(name, 20)));
          g.append(svg("text", { x: p.x + 8, y: p.y + 30, class: "sub" }, short(st.capability || st.kind, 22)));
        }
      }
      if (v > 1 || at) {
        const badge = (v > 1 ? "×" + v : "") + (at ? (v > 1 ? " " : "") + (at === "running" ? "▶" : at === "waiting" ? "‖" : "■") : "");
        const bx = p.x + p.w - 2;
        const by = p.y - 2;
        g.append(svg("rect", { class: "badge", x: bx - 8 - badge.length * 6, y: by - 9, width: 10 + badge.length * 6, height: 14, rx: 7 }));
        g.append(svg("text", { class: "badge-text", x: bx - 3, y: by + 2, "text-anchor": "end", "data-testid": "graph-node-badge" }, badge));
      }
      s.append(g);
    }
    // Labels last, over the lines and boxes they cross; each says its edge in full on hover.
    const layer = svg("g", { class: "labels" });
    for (const l of labels) {
      const t = svg("text", { x: l.x, y: l.y, "text-anchor": "middle", class: "label" + (l.taken ? " taken" : ""), "data-testid": "graph-edge-label", "data-from": l.from, "data-to": l.to }, l.text);
      t.append(svg("title", {}, l.full));
      layer.append(t);
    }
    s.append(layer);
    if (L.truncated) s.append(svg("text", { x: 10, y: L.height - 4, class: "sub" }, "only the first " + MAX_STEPS + " steps are drawn"));
    return s;
  }

  window.MusterGraph = { draw, layout };
})();
