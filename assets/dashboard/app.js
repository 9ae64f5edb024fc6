// muster dashboard: a live view of one node, from its HTTP API (docs/api.md).
//
// Rules this file keeps:
// - Every string from the server reaches the page through textContent or an attribute set
//   with setAttribute, never parsed as HTML: a run input cannot inject markup.
// - Nothing is loaded from outside the node; the token is read once from `?token=`, kept in
//   sessionStorage, removed from the address bar and sent as `Authorization: Bearer`
//   (never in a URL the page requests: the node refuses `?token=` on its API).
// - Controls a token's role may not use are not shown (`GET /v1/whoami`); the node refuses
//   them anyway (403).
// - Server-sent events are queued and applied once per animation frame; lists render only
//   the rows in view (agents, tree) or one page (runs), so 1,000 agents and 10,000 runs
//   cost what a screenful costs.
"use strict";

(function () {
  const ROW = 24; // px, matches --row in style.css
  const RUNS_PAGE = 50;
  const MAX_RUN_EVENTS = 5000; // a run's timeline keeps at most this many events
  const MAX_TASKS = 50000; // task -> run map, oldest dropped first
  const MAX_SSE_LINE = 1 << 20; // a longer line from the server is a broken stream
  const JSON_SHOWN = 20000; // characters of an input/output shown per step

  // ---------- small helpers ----------
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = String(v);
        else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, String(v));
      }
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function str(v) {
    return v === undefined || v === null ? "" : String(v);
  }

  // A CSS-class-safe token of a state name ("available", "waiting", ...).
  function stClass(s) {
    return "st st-" + str(s).toLowerCase().replace(/[^a-z0-9_-]/g, "");
  }

  function shortId(id) {
    const s = str(id);
    return s.length > 13 ? s.slice(0, 8) + "…" + s.slice(-4) : s;
  }

  function fmtTime(v) {
    if (v === undefined || v === null || v === "") return "";
    const d = typeof v === "number" ? new Date(v) : new Date(String(v));
    return isNaN(d.getTime()) ? str(v) : d.toLocaleTimeString();
  }

  function json(v) {
    let s;
    try {
      s = JSON.stringify(v, null, 2);
    } catch (_) {
      s = String(v);
    }
    if (s === undefined) s = "";
    return s.length > JSON_SHOWN ? s.slice(0, JSON_SHOWN) + "\n… (" + s.length + " characters)" : s;
  }

  // The list inside a response: the array itself, or the first array field named in keys.
  function listOf(body, ...keys) {
    if (Array.isArray(body)) return body;
    if (body && typeof body === "object") {
      for (const k of keys) if (Array.isArray(body[k])) return body[k];
    }
    return [];
  }

  function showError(msg) {
    const e = $("error");
    if (!msg) {
      e.hidden = true;
      e.textContent = "";
      return;
    }
    e.hidden = false;
    e.textContent = msg;
  }

  // ---------- the token ----------
  const TOKEN_KEY = "muster.token";
  function takeToken() {
    const url = new URL(window.location.href);
    const t = url.searchParams.get("token");
    if (t) {
      sessionStorage.setItem(TOKEN_KEY, t);
      url.searchParams.delete("token");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }
  let token = takeToken();

  // ---------- API ----------
  class HttpError extends Error {
    constructor(status, body) {
      const detail = body && (body.error || body.message) ? ": " + str(body.error || body.message) : "";
      super("HTTP " + status + detail);
      this.status = status;
      this.body = body;
    }
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    let data = null;
    const text = await res.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = { error: text.slice(0, 500) };
      }
    }
    if (res.status === 401) needLogin();
    if (!res.ok) throw new HttpError(res.status, data);
    return data;
  }

  function needLogin() {
    sessionStorage.removeItem(TOKEN_KEY);
    token = "";
    $("login").hidden = false;
    setConn(false, "token refused");
  }

  function setConn(on, text) {
    const c = $("conn");
    c.className = "conn " + (on ? "conn-on" : "conn-off");
    c.textContent = text;
  }

  // ---------- server-sent events over fetch ----------
  // fetch rather than EventSource: it sends the Authorization header (the token stays out
  // of URLs and logs) and Last-Event-ID on every reconnect.
  function subscribe(path, onEvent, opts) {
    const ctl = new AbortController();
    let lastId = opts && opts.from !== undefined ? String(opts.from) : null;
    let delay = 500;
    let stopped = false;
    (async () => {
      while (!stopped) {
        try {
          const headers = { Authorization: "Bearer " + token, Accept: "text/event-stream" };
          if (lastId !== null) headers["Last-Event-ID"] = lastId;
          const res = await fetch(path, { headers, signal: ctl.signal, cache: "no-store" });
          if (res.status === 401) {
            needLogin();
            return;
          }
          if (!res.ok || !res.body) throw new Error("events: HTTP " + res.status);
          if (opts && opts.onOpen) opts.onOpen();
          delay = 500;
          await readStream(res.body, (ev) => {
            if (ev.id !== null) lastId = ev.id;
            onEvent(ev);
          });
        } catch (e) {
          if (stopped) return;
          if (opts && opts.onDown) opts.onDown(e);
        }
        if (stopped) return;
        if (opts && opts.onDown) opts.onDown(null);
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10000);
      }
    })();
    return () => {
      stopped = true;
      ctl.abort();
    };
  }

  // The text/event-stream format: fields up to a blank line make one event.
  async function readStream(body, dispatch) {
    const reader = body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    let data = [];
    let type = "";
    let id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      // One pass over the chunk with an index (slicing per line would copy the rest of a
      // large chunk once per line).
      const eol = /\r\n|\r|\n/g;
      let at = 0;
      let m;
      while ((m = eol.exec(buf)) !== null) {
        // A "\r" that ends the chunk may be the first half of "\r\n": wait for the rest.
        if (m[0] === "\r" && m.index === buf.length - 1) break;
        const line = buf.slice(at, m.index);
        at = eol.lastIndex;
        if (line === "") {
          if (data.length) dispatch({ type: type || "message", data: data.join("\n"), id });
          data = [];
          type = "";
          id = null;
          continue;
        }
        if (line[0] === ":") continue;
        const c = line.indexOf(":");
        const field = c < 0 ? line : line.slice(0, c);
        let val = c < 0 ? "" : line.slice(c + 1);
        if (val[0] === " ") val = val.slice(1);
        if (field === "data") data.push(val);
        else if (field === "event") type = val;
        else if (field === "id") id = val;
      }
      buf = buf.slice(at);
      if (buf.length > MAX_SSE_LINE) throw new Error("events: a line longer than 1 MiB");
    }
  }

  // An SSE message -> {seq, at_ms, type, ...fields}. The data is a journal record
  // ({seq, at_ms, event: {type, ...}}) or an event alone ({type, ...}).
  function decodeEvent(msg) {
    if (msg.type === "start") return null; // where an `after=now` stream began: no record
    let d;
    try {
      d = JSON.parse(msg.data);
    } catch (_) {
      return null;
    }
    if (!d || typeof d !== "object") return null;
    let ev = d;
    if (d.event && typeof d.event === "object") ev = Object.assign({}, d.event, { seq: d.seq, at_ms: d.at_ms });
    if (!ev.type && msg.type && msg.type !== "message") ev = Object.assign({ type: msg.type }, ev);
    if (ev.seq === undefined && msg.id !== null && /^\d+$/.test(msg.id)) ev.seq = Number(msg.id);
    return ev.type ? ev : null;
  }

  // ---------- state ----------
  const state = {
    agents: new Map(), // id -> agent record from /v1/agents, updated by events
    agentOrder: [], // ids shown, filtered and sorted
    agentFilter: "",
    tree: null, // root node(s) from /v1/tree
    treeRows: [], // flattened visible nodes
    collapsed: new Set(),
    restarts: new Map(), // node id -> restarts seen live (added to the tree's counts)
    flashing: new Map(), // node id -> until (ms)
    totalRestarts: 0,
    runs: [], // the page shown
    runCursors: [null], // cursor of each page visited (null = newest)
    runPage: 0,
    runNext: null,
    runFilter: { status: "", workflow: "", extra: {} }, // extra: actions.js's filters
    runIndex: new Map(), // run id -> row object on the page
    gates: new Map(), // "run/gate" -> {run, gate, question, workflow}
    tasks: new Map(), // task id -> {run, step}
    selected: null, // run id in the detail panel
    detail: null, // GET /v1/runs/{id}
    timeline: [], // events of the selected run
    lastSeq: 0,
    role: null, // the token's role (GET /v1/whoami); null until known
    name: null, // the token's name, if it has one
    cluster: null, // GET /v1/cluster on a control node of a cluster; null on a single node
    workersSeen: new Set(), // worker nodes whose instances this page has seen
  };

  // What each role may do, in the order the node ranks them (docs/api.md, "Roles").
  const ROLES = ["viewer", "submitter", "operator", "admin"];
  // Whether the token's role allows what needs `needed`. While the role is unknown the
  // controls are hidden; a node that cannot say ("?") leaves the decision to its 403.
  function may(needed) {
    if (state.role === null) return false;
    if (!ROLES.includes(state.role)) return true;
    return ROLES.indexOf(state.role) >= ROLES.indexOf(needed);
  }

  async function loadWhoami() {
    try {
      const me = await api("GET", "/v1/whoami");
      state.role = str(me && me.role) || "?";
      state.name = me && me.name !== undefined && me.name !== null ? str(me.name) : null;
    } catch (e) {
      if (e.status === 401) throw e;
      state.role = "?";
    }
    document.body.setAttribute("data-role", state.role);
    $("whoami").textContent = state.name ? state.name + " (" + state.role + ")" : state.role;
    for (const f of hooks.role) f(state.role);
    dirty.gates = true;
    if (state.selected) dirty.detail = true;
  }

  const dirty = { agents: false, agentOrder: false, tree: false, runs: false, gates: false, detail: false, cluster: false };
  const refetch = { agents: false, tree: false, runs: false, gates: false, detail: false };

  // ---------- batching: one pass per animation frame ----------
  let queue = [];
  let scheduled = false;
  function enqueue(ev) {
    queue.push(ev);
    if (!scheduled) {
      scheduled = true;
      // rAF pauses in a hidden tab; the timer keeps the queue bounded there.
      const t = setTimeout(flush, 250);
      requestAnimationFrame(() => {
        clearTimeout(t);
        flush();
      });
    }
  }

  function flush() {
    if (!scheduled) return;
    scheduled = false;
    const batch = queue;
    queue = [];
    for (const ev of batch) apply(ev);
    render();
    scheduleRefetch();
  }

  function apply(ev) {
    if (typeof ev.seq === "number" && ev.seq > state.lastSeq) state.lastSeq = ev.seq;
    const agent = ev.agent !== undefined ? str(ev.agent) : null;
    switch (ev.type) {
      case "agent_registered": {
        const a = state.agents.get(agent) || { id: agent, in_flight: 0 };
        a.state = a.state || "available";
        a.generation = ev.generation;
        if (Array.isArray(ev.capabilities) && !a.capabilities) a.capabilities = ev.capabilities.map((c) => ({ name: str(c) }));
        state.agents.set(agent, a);
        dirty.agentOrder = true;
        refetch.agents = true;
        refetch.tree = true;
        break;
      }
      case "agent_state_changed": {
        const a = state.agents.get(agent);
        if (a) {
          a.state = ev.state;
          dirty.agents = true;
        } else refetch.agents = true;
        break;
      }
      case "agent_dropped_out": {
        const a = state.agents.get(agent);
        if (a) {
          a.state = "dropped";
          dirty.agents = true;
        }
        refetch.agents = true;
        refetch.tree = true;
        break;
      }
      case "child_restarted":
      case "supervisor_escalated": {
        const id = str(ev.type === "child_restarted" ? ev.child : ev.supervisor);
        if (ev.type === "child_restarted") {
          state.restarts.set(id, (state.restarts.get(id) || 0) + 1);
          state.totalRestarts += 1;
        }
        state.flashing.set(id, performance.now() + 1600);
        if (ev.supervisor !== undefined) state.flashing.set(str(ev.supervisor), performance.now() + 1600);
        dirty.tree = true;
        refetch.tree = true;
        break;
      }
      case "task_submitted":
        if (state.tasks.size >= MAX_TASKS) state.tasks.delete(state.tasks.keys().next().value);
        state.tasks.set(str(ev.task), { run: str(ev.correlation), step: stepOf(ev.sender) });
        break;
      case "lease_granted": {
        const a = state.agents.get(agent);
        if (a) {
          a.in_flight = (a.in_flight || 0) + 1;
          dirty.agents = true;
        }
        break;
      }
      case "result_accepted":
      case "attempt_failed": {
        const a = state.agents.get(agent);
        if (a && a.in_flight > 0) {
          a.in_flight -= 1;
          dirty.agents = true;
        }
        break;
      }
      case "run_started":
        if (state.runPage === 0 && matchesFilter({ workflow: ev.workflow, status: "running" })) {
          const row = { id: str(ev.run), workflow: ev.workflow, status: "running", started_ms: ev.at_ms };
          if (!state.runIndex.has(row.id)) {
            state.runs.unshift(row);
            state.runIndex.set(row.id, row);
            if (state.runs.length > RUNS_PAGE) {
              const gone = state.runs.pop();
              state.runIndex.delete(gone.id);
              refetch.runs = true; // the page's cursor moved
            }
            dirty.runs = true;
          }
        }
        break;
      case "step_entered":
        updateRun(ev.run, { step: ev.step });
        break;
      case "gate_waiting":
        state.gates.set(str(ev.run) + "/" + str(ev.gate), { run: str(ev.run), gate: str(ev.gate), question: ev.question });
        updateRun(ev.run, { status: "waiting", step: ev.gate });
        dirty.gates = true;
        break;
      case "gate_decided":
        state.gates.delete(str(ev.run) + "/" + str(ev.gate));
        updateRun(ev.run, { status: "running" });
        dirty.gates = true;
        break;
      case "run_ended":
        updateRun(ev.run, { status: ev.status, step: ev.step, ended_ms: ev.at_ms });
        for (const k of [...state.gates.keys()]) if (k.startsWith(str(ev.run) + "/")) state.gates.delete(k);
        dirty.gates = true;
        break;
      default:
        break;
    }
    // The selected run's timeline takes every event about it.
    if (state.selected && belongsTo(ev, state.selected)) {
      if (state.timeline.length < MAX_RUN_EVENTS && !seen(ev)) state.timeline.push(ev);
      dirty.detail = true;
      if (["step_entered", "step_completed", "step_failed", "run_ended", "gate_waiting", "gate_decided", "lease_granted"].includes(ev.type)) refetch.detail = true;
    }
  }

  function stepOf(sender) {
    const s = str(sender);
    const i = s.lastIndexOf("/");
    return i >= 0 ? s.slice(i + 1) : "";
  }

  function belongsTo(ev, run) {
    if (ev.run !== undefined) return str(ev.run) === run;
    if (ev.correlation !== undefined) return str(ev.correlation) === run;
    if (ev.task !== undefined) {
      const t = state.tasks.get(str(ev.task));
      return !!t && t.run === run;
    }
    return false;
  }

  // The selected run's events arrive from its own stream and from the global one.
  const timelineSeqs = new Set();
  function seen(ev) {
    if (typeof ev.seq !== "number") return false;
    if (timelineSeqs.has(ev.seq)) return true;
    timelineSeqs.add(ev.seq);
    return false;
  }

  function updateRun(run, fields) {
    const row = state.runIndex.get(str(run));
    if (row) {
      Object.assign(row, fields);
      dirty.runs = true;
    }
    if (state.selected === str(run)) dirty.detail = true;
    if (state.runFilter.status) refetch.runs = true;
  }

  function matchesFilter(r) {
    const f = state.runFilter;
    if (f.status && str(r.status) !== f.status) return false;
    if (f.workflow && str(r.workflow) !== f.workflow) return false;
    return true;
  }

  // Lists that events only sketch (load, the tree's shape, a filtered page) are fetched
  // again, at most every 500 ms each.
  let refetchTimer = null;
  function scheduleRefetch() {
    if (refetchTimer || !Object.values(refetch).some(Boolean)) return;
    refetchTimer = setTimeout(async () => {
      refetchTimer = null;
      const what = Object.assign({}, refetch);
      for (const k of Object.keys(refetch)) refetch[k] = false;
      const jobs = [];
      if (what.agents) jobs.push(loadAgents());
      if (what.tree) jobs.push(loadTree());
      if (what.runs) jobs.push(loadRuns());
      if (what.detail && state.selected) jobs.push(loadDetail(state.selected));
      await Promise.allSettled(jobs);
      render();
    }, 500);
  }

  // ---------- loading ----------
  async function loadAgents() {
    const body = await api("GET", "/v1/agents");
    const list = listOf(body, "agents", "instances");
    const next = new Map();
    for (const a of list) {
      const id = str(a.id || a.instance || a.name);
      next.set(id, Object.assign({}, a, { id }));
    }
    state.agents = next;
    dirty.agentOrder = true;
  }

  // A control node of a cluster names the control nodes and their liveness; a single
  // node has no such route (404) and the panel stays hidden.
  async function loadCluster() {
    try {
      state.cluster = await api("GET", "/v1/cluster");
    } catch (e) {
      state.cluster = null;
    }
    dirty.cluster = true;
  }

  async function loadTree() {
    state.tree = await api("GET", "/v1/tree");
    state.restarts.clear(); // the tree's own counts include them now
    dirty.tree = true;
  }

  function runsQuery(cursor, extra) {
    const q = new URLSearchParams();
    q.set("limit", String(RUNS_PAGE));
    if (cursor) q.set("after", cursor);
    if (state.runFilter.status) q.set("status", state.runFilter.status);
    if (state.runFilter.workflow) q.set("workflow", state.runFilter.workflow);
    for (const [k, v] of Object.entries(state.runFilter.extra)) if (v) q.set(k, v);
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    return "/v1/runs?" + q.toString();
  }

  async function loadRuns() {
    const body = await api("GET", runsQuery(state.runCursors[state.runPage]));
    const list = listOf(body, "runs", "items");
    state.runs = list.map(normalizeRun);
    state.runIndex = new Map(state.runs.map((r) => [r.id, r]));
    const paged = body && !Array.isArray(body) && "next" in body;
    state.runNext = paged ? body.next || null : null;
    // A reply without `next`: the last run shown is where the next page starts.
    if (!paged && list.length === RUNS_PAGE) state.runNext = state.runs[state.runs.length - 1].id;
    for (const r of state.runs) if (r.gate && r.status === "waiting") rememberGate(r);
    dirty.runs = true;
  }

  // Gates waiting anywhere, not only on the page shown.
  async function loadGates() {
    const body = await api("GET", "/v1/runs?status=waiting&limit=" + RUNS_PAGE);
    const list = listOf(body, "runs", "items").map(normalizeRun);
    state.gates.clear();
    for (const r of list) rememberGate(r);
    dirty.gates = true;
  }

  function rememberGate(r) {
    const gates = Array.isArray(r.gates) ? r.gates : r.gate ? [typeof r.gate === "object" ? r.gate : { gate: r.gate, question: r.question }] : [];
    for (const g of gates) {
      const name = str(g.gate || g.name || g.step);
      if (g.decided || g.decision) continue;
      state.gates.set(r.id + "/" + name, { run: r.id, gate: name, question: g.question, workflow: r.workflow });
    }
  }

  function normalizeRun(r) {
    return Object.assign({}, r, {
      id: str(r.id || r.run),
      started_ms: r.started_ms || r.started_at || r.started || r.at_ms,
    });
  }

  async function loadDetail(id) {
    try {
      const d = await api("GET", "/v1/runs/" + encodeURIComponent(id));
      if (state.selected !== id) return;
      state.detail = normalizeRun(d || {});
      rememberGate(state.detail);
      dirty.detail = true;
      dirty.gates = true;
      if (scrollFor === id) {
        scrollFor = null;
        render();
        scrollToDetail(id);
        scrollFor = null;
      }
    } catch (e) {
      if (state.selected === id) showError("run " + id + ": " + e.message);
    }
  }

  // ---------- rendering ----------
  function render() {
    // The workers are read from the agents: redrawn with them.
    const clusterToo = dirty.cluster || dirty.agents || dirty.agentOrder;
    if (dirty.agentOrder) {
      computeAgentOrder();
      dirty.agentOrder = false;
      dirty.agents = true;
    }
    if (dirty.agents) {
      renderAgents();
      dirty.agents = false;
    }
    if (dirty.tree) {
      renderTree();
      dirty.tree = false;
    }
    if (dirty.runs) {
      renderRuns();
      dirty.runs = false;
    }
    if (dirty.gates) {
      renderGates();
      dirty.gates = false;
    }
    if (dirty.detail) {
      renderDetail();
      dirty.detail = false;
    }
    if (clusterToo) {
      renderCluster();
      dirty.cluster = false;
    }
    $("last-seq").textContent = state.lastSeq ? "event " + state.lastSeq : "";
  }

  // A list of fixed-height rows of which only those in view (plus a margin) are built.
  function virtualList(container, count, build) {
    const space = container.firstElementChild;
    space.style.height = count * ROW + "px";
    const top = container.scrollTop;
    const height = container.clientHeight || 320;
    const first = Math.max(0, Math.floor(top / ROW) - 5);
    const last = Math.min(count, Math.ceil((top + height) / ROW) + 5);
    const rows = [];
    for (let i = first; i < last; i++) {
      const r = build(i);
      r.classList.add("vrow");
      r.style.top = i * ROW + "px";
      rows.push(r);
    }
    space.replaceChildren(...rows);
  }

  function capNames(a) {
    return (Array.isArray(a.capabilities) ? a.capabilities : []).map((c) => (c && typeof c === "object" ? str(c.name) : str(c)));
  }

  // Instances are grouped by the node that hosts them (none: this process), then by id.
  function computeAgentOrder() {
    const f = state.agentFilter.toLowerCase();
    const ids = [];
    for (const [id, a] of state.agents) {
      if (f) {
        const hay = [id, str(a.agent), str(a.state), str(a.node), ...capNames(a)].join(" ").toLowerCase();
        if (!hay.includes(f)) continue;
      }
      ids.push(id);
    }
    const nodeOf = (id) => str((state.agents.get(id) || {}).node);
    ids.sort((x, y) => nodeOf(x).localeCompare(nodeOf(y), undefined, { numeric: true }) || x.localeCompare(y, undefined, { numeric: true }));
    state.agentOrder = ids;
  }

  // Control nodes (live, or gone since the page saw them) and workers (with their
  // instances now; one whose instances all left is shown gone).
  function renderCluster() {
    const panel = $("cluster-panel");
    const c = state.cluster;
    panel.hidden = !c;
    if (!c) return;
    $("cluster-node").textContent = "this node: " + str(c.node);
    const chip = (name, live, extra, testid) =>
      el(
        "span",
        { class: "node-chip", "data-testid": testid, "data-node": name, "data-live": live ? "true" : "false" },
        el("span", { class: "mono", text: name }),
        " ",
        el("span", { class: stClass(live ? "ready" : "failed"), text: live ? "live" : "gone" }),
        extra ? el("span", { class: "muted", text: " " + extra }) : null,
      );
    const controls = listOf(c, "control_nodes").map((n) =>
      chip(str(n.node), !!n.live, n.node === c.node ? "(this node)" : "", "cluster-control"),
    );
    $("cluster-controls").replaceChildren(...controls);
    const instances = new Map();
    for (const a of state.agents.values()) {
      if (!a.node) continue;
      const n = str(a.node);
      state.workersSeen.add(n);
      instances.set(n, (instances.get(n) || 0) + 1);
    }
    const workers = [...state.workersSeen].sort().map((n) => {
      const count = instances.get(n) || 0;
      return chip(n, count > 0, count + (count === 1 ? " instance" : " instances"), "cluster-worker");
    });
    if (!workers.length) workers.push(el("span", { class: "muted", text: "none" }));
    $("cluster-workers").replaceChildren(...workers);
  }

  function renderAgents() {
    $("agents-count").textContent = String(state.agents.size);
    const by = {};
    let busy = 0;
    for (const a of state.agents.values()) {
      const s = str(a.state) || "unknown";
      by[s] = (by[s] || 0) + 1;
      busy += Number(a.in_flight) || 0;
    }
    $("agents-summary").textContent =
      Object.entries(by)
        .map(([s, n]) => n + " " + s)
        .join(" · ") + (state.agents.size ? " · " + busy + " tasks in flight" : "");
    virtualList($("agents-list"), state.agentOrder.length, (i) => {
      const a = state.agents.get(state.agentOrder[i]) || {};
      const cap = Number(a.concurrency) || 1;
      const load = Number(a.in_flight) || 0;
      const bar = el("span", { class: "load" }, el("i"));
      bar.firstChild.style.width = Math.min(100, (100 * load) / cap) + "%";
      return el(
        "div",
        { class: "agent-cols", "data-testid": "agent-row", "data-agent-id": a.id, "data-state": str(a.state) },
        el("span", { class: "mono", title: a.id, text: a.id }),
        el("span", null, el("span", { class: stClass(a.state), "data-testid": "agent-state", text: str(a.state) })),
        el("span", { "data-testid": "agent-load" }, bar, load + "/" + cap),
        el("span", { class: "muted", text: capNames(a).join(", ") }),
      );
    });
  }

  // The tree API gives nested nodes; the view is those nodes flattened, collapsible.
  function children(n) {
    return listOf(n, "children", "nodes");
  }
  function nodeId(n) {
    return str(n.id || n.name || n.child || n.supervisor);
  }

  function flattenTree() {
    const out = [];
    const roots = Array.isArray(state.tree) ? state.tree : state.tree ? (children(state.tree).length && !nodeId(state.tree) ? children(state.tree) : [state.tree]) : [];
    const walk = (n, depth, path) => {
      if (out.length > 200000 || depth > 64) return; // a bound on what a reply can make us build
      const id = nodeId(n);
      const key = path + "/" + id;
      out.push({ n, depth, key });
      if (!state.collapsed.has(key)) for (const c of children(n)) walk(c, depth + 1, key);
    };
    for (const r of roots) walk(r, 0, "");
    return out;
  }

  // CSSOM, not a style attribute: the page's Content-Security-Policy forbids inline styles.
  function indent(depth) {
    const e = el("span", { class: "indent" });
    e.style.width = depth * 14 + "px";
    return e;
  }

  function renderTree() {
    state.treeRows = flattenTree();
    $("tree-count").textContent = String(state.treeRows.length);
    const now = performance.now();
    let restarts = 0;
    for (const { n } of state.treeRows) restarts += Number(n.restarts || n.restart_count) || 0;
    for (const v of state.restarts.values()) restarts += v;
    $("tree-restarts").textContent = restarts + " restarts" + (state.totalRestarts ? " (" + state.totalRestarts + " seen live)" : "");
    $("tree-panel").setAttribute("data-restarts-seen", String(state.totalRestarts));
    virtualList($("tree-list"), state.treeRows.length, (i) => {
      const { n, depth, key } = state.treeRows[i];
      const id = nodeId(n);
      const kids = children(n).length;
      const isSup = kids > 0 || n.kind === "supervisor" || n.strategy !== undefined;
      const count = (Number(n.restarts || n.restart_count) || 0) + (state.restarts.get(id) || 0);
      const badges = [];
      if (n.strategy !== undefined) badges.push(str(n.strategy));
      if (n.intensity !== undefined) badges.push("intensity " + (typeof n.intensity === "object" ? json(n.intensity).replace(/\s+/g, " ") : str(n.intensity)));
      if (n.restart !== undefined || n.restart_type !== undefined) badges.push(str(n.restart || n.restart_type));
      const row = el(
        "div",
        { class: "tree-row", "data-testid": "tree-node", "data-node-id": id, "data-kind": isSup ? "supervisor" : "child", "data-restarts": count },
        el(
          "span",
          null,
          indent(depth),
          el("span", { class: "twisty", text: kids ? (state.collapsed.has(key) ? "▸" : "▾") : "", "data-key": key }),
          el("span", { class: "name" + (isSup ? " sup" : ""), text: id }),
          el("span", { class: "badge", text: badges.join(" · ") }),
        ),
        el(
          "span",
          null,
          n.state !== undefined ? el("span", { class: stClass(n.state), text: str(n.state) }) : null,
          " ",
          el("span", { class: "restarts", "data-testid": "tree-node-restarts", title: "restarts", text: "↻ " + count }),
        ),
      );
      const until = state.flashing.get(id);
      if (until && until > now) row.classList.add("flash");
      return row;
    });
    for (const [id, until] of state.flashing) if (until <= now) state.flashing.delete(id);
  }

  // A run's duration once it ended; its age while it goes on.
  function runDuration(r) {
    const fmt = window.MusterRun.fmtDur;
    const from = Number(r.started_ms);
    if (r.duration_ms !== undefined && r.duration_ms !== null && (r.ended_ms || !["running", "waiting"].includes(str(r.status)))) return fmt(r.duration_ms);
    if (r.ended_ms && from) return fmt(Number(r.ended_ms) - from);
    if (from && ["running", "waiting"].includes(str(r.status))) return fmt(Date.now() - from) + " so far";
    return "";
  }

  function renderRuns() {
    const body = $("runs-body");
    const rows = state.runs.map((r) =>
      el(
        "tr",
        { "data-testid": "run-row", "data-run-id": r.id, "data-status": str(r.status), class: r.id === state.selected ? "selected" : "" },
        el("td", { class: "mono", title: r.id, text: shortId(r.id) }),
        el("td", { text: str(r.workflow) }),
        el("td", null, el("span", { class: stClass(r.status), "data-testid": "run-status", text: str(r.status) })),
        el("td", { text: str(r.step || r.current_step) }),
        el("td", { class: "muted", text: fmtTime(r.started_ms) }),
        el("td", { class: "muted", "data-testid": "run-duration", text: runDuration(r) }),
        el("td", { class: "mono", "data-testid": "run-owner", text: str(r.owner_node) }),
      ),
    );
    if (!rows.length) rows.push(el("tr", null, el("td", { colspan: 7, class: "muted", text: "no runs" })));
    body.replaceChildren(...rows);
    $("runs-prev").disabled = state.runPage === 0;
    $("runs-next").disabled = !state.runNext;
    $("runs-page").textContent = "page " + (state.runPage + 1);
  }

  function gateButtons(run, gate) {
    // Deciding a gate needs role `operator`.
    if (!may("operator")) {
      return [el("span", { class: "muted", "data-testid": "gate-readonly", text: state.role === null ? "" : "deciding needs role operator" })];
    }
    const note = el("input", { type: "text", placeholder: "note (optional)", "data-testid": "gate-note", maxlength: 2000 });
    const decide = (decision) => async (e) => {
      const box = e.target.closest(".gate");
      for (const b of box.querySelectorAll("button")) b.disabled = true;
      try {
        await api("POST", "/v1/runs/" + encodeURIComponent(run) + "/gates/" + encodeURIComponent(gate), { decision, note: note.value });
        state.gates.delete(run + "/" + gate);
        showError("");
      } catch (err) {
        showError("gate " + gate + " of run " + run + ": " + err.message);
        if (err.status === 409) state.gates.delete(run + "/" + gate);
      }
      dirty.gates = true;
      if (state.selected === run) refetch.detail = true;
      render();
      scheduleRefetch();
    };
    return [
      note,
      el("button", { type: "button", class: "approve", "data-testid": "gate-approve", "data-run-id": run, "data-gate": gate, onclick: decide("approve") }, "Approve"),
      el("button", { type: "button", class: "reject", "data-testid": "gate-reject", "data-run-id": run, "data-gate": gate, onclick: decide("reject") }, "Reject"),
    ];
  }

  function renderGates() {
    const list = [...state.gates.values()];
    $("gates-count").textContent = String(list.length);
    const shown = list.slice(0, 100);
    const rows = shown.map((g) =>
      el(
        "div",
        { class: "gate", "data-testid": "gate-row", "data-run-id": g.run, "data-gate": g.gate },
        el("a", { href: "#", class: "mono", title: g.run, text: shortId(g.run), onclick: (e) => (e.preventDefault(), select(g.run)) }),
        el("span", { class: "mono", text: g.gate }),
        el("span", { class: "q", text: str(g.question) }),
        ...gateButtons(g.run, g.gate),
      ),
    );
    if (list.length > shown.length) rows.push(el("div", { class: "muted", text: "and " + (list.length - shown.length) + " more" }));
    if (!rows.length) rows.push(el("div", { class: "muted", text: "none" }));
    $("gates-list").replaceChildren(...rows);
    if (state.selected) renderRunGate();
  }

  function renderRunGate() {
    const box = $("run-gate");
    const mine = [...state.gates.values()].filter((g) => g.run === state.selected);
    const why = mine.length ? gateReasons(state.detail) : [];
    box.replaceChildren(
      ...mine.map((g) =>
        el("div", { class: "gate", "data-testid": "run-gate-row", "data-gate": g.gate }, el("span", { class: "mono", text: "gate " + g.gate }), el("span", { class: "q", text: str(g.question) }), ...gateButtons(g.run, g.gate)),
      ),
      ...(why.length ? [el("ul", { class: "gate-why", "data-testid": "gate-why" }, ...why.map((w) => el("li", { text: w })))] : []),
    );
  }

  // Why a run waits at its gate, from its detail: the escalation reason, if any, and
  // what the steps of its last round found (status, reason, the output's counts and
  // lists), so a person can decide without opening the steps.
  function gateReasons(d) {
    if (!d) return [];
    const out = [];
    if (d.reason) out.push("escalated: " + (typeof d.reason === "object" ? json(d.reason) : str(d.reason)));
    const steps = stepsOf(d);
    // The last round: the steps after the last visit of the first step that repeats.
    const seenAt = new Map();
    let from = 0;
    steps.forEach((s, i) => {
      const name = str(s.step);
      if (seenAt.has(name)) from = Math.max(from, i);
      seenAt.set(name, i);
    });
    for (const s of steps.slice(from)) {
      const parts = [str(s.step) + ": " + str(s.status)];
      if (s.reason) parts.push(str(s.reason));
      const found = keyFields(s.output);
      if (found) parts.push(found);
      out.push(parts.join(" — "));
    }
    return out;
  }

  // An output's key fields in words: numbers and booleans as they are, lists by their
  // length and first items (`failures: 1 (test_low_stock_sorted)`), nested objects left out.
  function keyFields(o) {
    if (!o || typeof o !== "object" || Array.isArray(o)) return "";
    const parts = [];
    for (const [k, v] of Object.entries(o)) {
      if (typeof v === "number" || typeof v === "boolean") parts.push(k + " " + v);
      else if (Array.isArray(v)) {
        const first = v.slice(0, 2).map((x) => (typeof x === "object" && x ? str(x.test || x.message || x.file || x.name || json(x)) : str(x)));
        parts.push(k + ": " + v.length + (v.length ? " (" + first.join("; ") + (v.length > 2 ? "; …" : "") + ")" : ""));
      }
    }
    return parts.join(", ");
  }

  // ---------- a run in detail ----------
  let closeRunStream = null;
  function select(id) {
    if (closeRunStream) closeRunStream();
    closeRunStream = null;
    state.selected = id;
    state.detail = null;
    state.timeline = [];
    timelineSeqs.clear();
    $("run-panel").hidden = !id;
    // The address names the run shown, so it can be shared or reloaded.
    history.replaceState(null, "", location.pathname + location.search + (id ? "#run=" + encodeURIComponent(id) : ""));
    dirty.runs = true;
    if (!id) return render();
    dirty.detail = true;
    render();
    // The detail sits below the lists: brought into view (also when opened by `#run=ID`),
    // and again once its document has loaded (the page below it may have been too short).
    scrollToDetail(id);
    loadDetail(id);
    // The run's own history, from its first event, then live.
    closeRunStream = subscribe("/v1/events?run=" + encodeURIComponent(id), (msg) => {
      const ev = decodeEvent(msg);
      if (!ev || state.selected !== id) return;
      if (ev.type === "task_submitted") {
        state.tasks.set(str(ev.task), { run: str(ev.correlation), step: stepOf(ev.sender) });
      }
      if (!seen(ev) && state.timeline.length < MAX_RUN_EVENTS) state.timeline.push(ev);
      dirty.detail = true;
      enqueue({ type: "_tick" });
    }, { from: 0 });
  }

  let scrollFor = null; // the run whose detail is to be scrolled to once it has loaded
  function scrollToDetail(id) {
    scrollFor = id;
    const go = () => {
      if (state.selected === id) $("run-panel").scrollIntoView({ block: "start" });
    };
    // Next frame, or a timer in a background tab (which draws no frames).
    const t = setTimeout(go, 100);
    requestAnimationFrame(() => {
      clearTimeout(t);
      go();
    });
  }

  function stepsOf(d) {
    if (!d) return [];
    if (Array.isArray(d.steps)) return d.steps;
    if (d.steps && typeof d.steps === "object") return Object.entries(d.steps).map(([name, s]) => Object.assign({ step: name }, s));
    return [];
  }

  function renderDetail() {
    const id = state.selected;
    if (!id) return;
    const d = state.detail || {};
    const row = state.runIndex.get(id) || {};
    const status = str(d.status || row.status);
    $("run-id").textContent = id;
    $("run-id").title = id;
    const st = $("run-status");
    st.className = stClass(status);
    st.textContent = status;
    const meta = [];
    if (d.workflow || row.workflow) meta.push("workflow " + str(d.workflow || row.workflow));
    if (d.owner_node || row.owner_node) meta.push("driven by control node " + str(d.owner_node || row.owner_node));
    if (d.reason) meta.push("reason: " + (typeof d.reason === "object" ? json(d.reason) : str(d.reason)));
    $("run-meta").textContent = meta.join(" · ");
    // The run's LLM usage and each attempt's prompts: llm.js.
    if (window.musterLlm) window.musterLlm.renderRun($("run-llm"), d, api);
    renderRunGate();
    renderTimeline();
    const run = window.MusterRun; // run.js: loaded before this file
    run.renderGraph($("run-graph"), Object.assign({ workflow: row.workflow }, d), state.timeline, status);
    run.renderDecisions($("run-decisions"), d);
    const visits = run.progressIndex(d);
    const nth = new Map();
    const now = Date.now();
    const steps = stepsOf(d);
    const rows = steps.map((s) => {
      const name = str(s.step || s.name);
      const reassigned = s.reassignments !== undefined ? s.reassignments : s.reassigned;
      const leases = Array.isArray(s.leases) ? s.leases : [];
      const last = leases.length ? leases[leases.length - 1] : {};
      const epoch = s.epoch !== undefined ? s.epoch : last.epoch;
      const owner = s.owner || s.agent || last.agent;
      nth.set(name, (nth.get(name) || 0) + 1);
      const visit = visits.get(name + "#" + nth.get(name)) || {};
      return el(
        "tr",
        { "data-testid": "step-row", "data-step": name },
        el("td", { class: "mono", text: name }),
        el("td", null, el("span", { class: stClass(s.status), text: str(s.status) })),
        el("td", { "data-testid": "step-duration", text: run.stepDuration(s, now) }),
        el("td", { class: "mono", "data-testid": "step-owner", text: str(owner) }),
        el("td", { text: str(epoch) }),
        el("td", { title: leases.map((l) => str(l.agent) + " e" + str(l.epoch) + ": " + str(l.outcome)).join("\n"), text: str(s.attempts) }),
        el("td", { text: Array.isArray(reassigned) ? String(reassigned.length) : str(reassigned) }),
        el("td", { text: str(s.stale_rejected) }),
        el("td", { "data-testid": "step-verdict", text: str(visit.verdict || s.reason) }),
        el("td", null, s.input !== undefined ? el("details", null, el("summary", null, "input"), el("pre", { text: json(s.input) })) : null),
        el("td", null, s.output === undefined || s.output === null ? null : run.output(s.output)),
      );
    });
    if (!rows.length) rows.push(el("tr", null, el("td", { colspan: 11, class: "muted", text: state.detail ? "no steps yet" : "loading…" })));
    $("run-steps").replaceChildren(...rows);
    for (const f of hooks.detail) f(id, state.detail);
  }

  // The run as a sequence diagram: the run's engine on the left, each agent instance that
  // held one of its leases as a lifeline; leases go right, results and failures come back.
  function renderTimeline() {
    const box = $("run-timeline");
    const evs = state.timeline.slice().sort((a, b) => (a.seq || 0) - (b.seq || 0));
    const lanes = ["run"];
    const lane = (a) => {
      const k = str(a);
      let i = lanes.indexOf(k);
      if (i < 0) {
        lanes.push(k);
        i = lanes.length - 1;
      }
      return i;
    };
    const lastOwner = new Map(); // task -> agent of its previous lease
    const leasedAt = new Map(); // "task/epoch" -> when the lease was granted
    const took = (ev) => {
      const at = leasedAt.get(str(ev.task) + "/" + str(ev.epoch));
      return at !== undefined && typeof ev.at_ms === "number" ? " · " + window.MusterRun.fmtDur(ev.at_ms - at) : "";
    };
    const items = [];
    for (const ev of evs) {
      const before = items.length;
      const t = ev.task !== undefined ? state.tasks.get(str(ev.task)) : null;
      const step = t && t.step ? t.step : "";
      switch (ev.type) {
        case "step_entered":
          items.push({ kind: "note", text: "▶ " + str(ev.step) + (ev.visit > 1 ? " (visit " + ev.visit + ")" : "") });
          break;
        case "lease_granted": {
          const prev = lastOwner.get(str(ev.task));
          const re = prev !== undefined && prev !== str(ev.agent);
          lastOwner.set(str(ev.task), str(ev.agent));
          leasedAt.set(str(ev.task) + "/" + str(ev.epoch), ev.at_ms);
          items.push({ kind: re ? "reassign" : "lease", from: 0, to: lane(ev.agent), text: (step ? step + " · " : "") + "lease e" + ev.epoch + " · attempt " + ev.attempt + (re ? " · reassigned from " + prev : "") });
          break;
        }
        case "result_accepted":
          items.push({ kind: "ok", from: lane(ev.agent), to: 0, text: "✓ result e" + ev.epoch + took(ev) });
          break;
        case "attempt_failed":
          items.push({ kind: "fail", from: lane(ev.agent), to: 0, text: "✗ " + str(ev.reason) + " e" + ev.epoch + took(ev) + (ev.detail ? ": " + str(ev.detail).slice(0, 80) : "") });
          break;
        case "result_stale":
          items.push({ kind: "stale", from: lane(ev.agent), to: 0, text: "stale e" + ev.epoch + " (in force e" + ev.current_epoch + ") fenced" });
          break;
        case "task_reused":
          items.push({ kind: "note", text: "↺ " + (step || "task") + " reused an earlier result" });
          break;
        case "task_escalated":
          items.push({ kind: "note", text: "⚠ " + (step || "task") + " escalated to " + str(ev.to) + ": " + str(ev.reason) });
          break;
        case "step_failed":
          items.push({ kind: "note", text: "✗ step " + str(ev.step) + ": " + str(ev.reason) });
          break;
        case "gate_waiting":
          items.push({ kind: "note", text: "‖ gate " + str(ev.gate) + ": " + str(ev.question) });
          break;
        case "gate_decided": {
          // Who decided, and the note in full (wrapped, not cut).
          const who = window.MusterRun.attribution(ev.reason);
          items.push({ kind: "note", full: true, text: (ev.approved ? "✓ approved " : "✗ rejected ") + str(ev.gate) + (who.by ? " by " + who.by : "") + (who.note ? ": " + who.note : "") });
          break;
        }
        case "run_taken_over":
          items.push({ kind: "note", text: "⇄ taken over by control node " + str(ev.to) + " from " + str(ev.from) + " (lease revision " + str(ev.revision) + ")" });
          break;
        case "run_ended":
          items.push({ kind: "note", text: "■ " + str(ev.status) + " at " + str(ev.step) + (ev.reason ? ": " + str(ev.reason) : "") });
          break;
        default:
          break;
      }
      for (let i = before; i < items.length; i++) items[i].at = ev.at_ms;
    }
    const LW = 170;
    const AXIS = 64; // the time axis: each item's time from the run's first event
    const W = Math.max(480, AXIS + 60 + LW * lanes.length);
    // A note starts on the run's lane (x(0) below) and must end inside the drawing.
    const NOTE_CHARS = Math.max(20, Math.floor((W - (AXIS + 30 + LW / 2) - 8) / 6.2));
    // A note takes as many lines as its text needs (a gate's note is shown in full).
    for (const it of items) {
      if (it.kind !== "note") continue;
      const text = it.full ? it.text : it.text.length > 120 ? it.text.slice(0, 119) + "…" : it.text;
      it.lines = [];
      for (let i = 0; i < text.length && it.lines.length < 40; i += NOTE_CHARS) it.lines.push(text.slice(i, i + NOTE_CHARS));
      if (!it.lines.length) it.lines.push("");
    }
    const ys = [];
    let yy = 40;
    for (const it of items) {
      ys.push(yy);
      yy += 26 + (it.lines ? (it.lines.length - 1) * 14 : 0);
    }
    const H = yy + 10;
    const s = svg("svg", { width: W, height: H, "data-testid": "timeline-svg", role: "img" });
    s.append(svg("title", {}, "sequence diagram of run " + state.selected));
    const x = (i) => AXIS + 30 + LW / 2 + i * LW;
    s.append(svg("text", { x: 6, y: 16, class: "axis" }, "time"));
    s.append(svg("line", { x1: AXIS - 4, y1: 24, x2: AXIS - 4, y2: H - 4, class: "axis-line" }));
    lanes.forEach((name, i) => {
      s.append(svg("text", { x: x(i), y: 16, "text-anchor": "middle", class: "who", "data-testid": "timeline-lane" }, name.length > 24 ? name.slice(0, 23) + "…" : name));
      s.append(svg("line", { x1: x(i), y1: 24, x2: x(i), y2: H - 4, class: "life" }));
    });
    const t0 = items.reduce((m, it) => (typeof it.at === "number" && (m === null || it.at < m) ? it.at : m), null);
    let lastTick = null;
    items.forEach((it, k) => {
      const y = ys[k];
      const g = svg("g", { class: it.kind === "note" ? "note" : "m-" + it.kind, "data-testid": "timeline-item", "data-kind": it.kind });
      // The time axis: "+1.2 s" from the run's first event, said once per distinct time.
      if (t0 !== null && typeof it.at === "number") {
        const tick = "+" + window.MusterRun.fmtDur(it.at - t0);
        if (tick !== lastTick) g.append(svg("text", { x: AXIS - 10, y: y + 4, "text-anchor": "end", class: "axis", "data-testid": "timeline-time" }, tick));
        lastTick = tick;
      }
      if (it.kind === "note") {
        const longest = it.lines.reduce((m, l) => Math.max(m, l.length), 0);
        g.append(svg("rect", { x: x(0) - 10, y: y - 12, width: Math.min(W - x(0) + 10, 8 + longest * 6.2), height: 18 + (it.lines.length - 1) * 14, rx: 3 }));
        it.lines.forEach((line, i) => g.append(svg("text", { x: x(0) - 4, y: y + 1 + i * 14 }, line)));
      } else {
        const x1 = x(it.from);
        const x2 = x(it.to);
        const dir = x2 > x1 ? -1 : 1;
        g.append(svg("line", { x1, y1: y, x2, y2: y, "stroke-width": 1.5 }));
        g.append(svg("path", { d: "M" + x2 + " " + y + " l" + dir * 7 + " -4 l0 8 z", class: "head" }));
        const text = it.text.length > 60 ? it.text.slice(0, 59) + "…" : it.text;
        g.append(svg("text", { x: Math.min(x1, x2) + 6, y: y - 4 }, text));
      }
      s.append(g);
    });
    if (!items.length) s.append(svg("text", { x: 10, y: 40 }, "no handoffs yet"));
    box.replaceChildren(s);
  }

  // ---------- wiring ----------
  function wire() {
    $("login").addEventListener("submit", (e) => {
      e.preventDefault();
      const t = $("login-token").value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      token = t;
      $("login").hidden = true;
      start();
    });
    let filterTimer = null;
    $("agents-filter").addEventListener("input", (e) => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(() => {
        state.agentFilter = e.target.value.trim();
        $("agents-list").scrollTop = 0;
        dirty.agentOrder = true;
        render();
      }, 120);
    });
    for (const [list, key] of [
      ["agents-list", "agents"],
      ["tree-list", "tree"],
    ]) {
      let pending = false;
      $(list).addEventListener("scroll", () => {
        if (pending) return;
        pending = true;
        requestAnimationFrame(() => {
          pending = false;
          dirty[key] = true;
          render();
        });
      });
    }
    $("tree-list").addEventListener("click", (e) => {
      const key = e.target.getAttribute && e.target.getAttribute("data-key");
      if (!key) return;
      if (state.collapsed.has(key)) state.collapsed.delete(key);
      else state.collapsed.add(key);
      dirty.tree = true;
      render();
    });
    $("runs-body").addEventListener("click", (e) => {
      const tr = e.target.closest("tr[data-run-id]");
      if (tr) select(tr.getAttribute("data-run-id"));
    });
    $("run-close").addEventListener("click", () => select(null));
    const refilter = () => {
      state.runFilter.status = $("runs-status").value;
      state.runFilter.workflow = $("runs-workflow").value.trim();
      state.runPage = 0;
      state.runCursors = [null];
      loadRuns().then(render, (e) => showError("runs: " + e.message));
    };
    $("runs-status").addEventListener("change", refilter);
    $("runs-workflow").addEventListener("change", refilter);
    $("runs-next").addEventListener("click", () => {
      if (!state.runNext) return;
      state.runCursors[state.runPage + 1] = state.runNext;
      state.runPage += 1;
      loadRuns().then(render, (e) => showError("runs: " + e.message));
    });
    $("runs-prev").addEventListener("click", () => {
      if (state.runPage === 0) return;
      state.runPage -= 1;
      loadRuns().then(render, (e) => showError("runs: " + e.message));
    });
    // Flashes fade by themselves; the tree is redrawn while one is on.
    setInterval(() => {
      if (state.flashing.size) {
        dirty.tree = true;
        render();
      }
    }, 400);
    // Ages move on: the page of runs (and an open run at work) is redrawn every 5 s. Not
    // an open run waiting at a gate: its note field would be drawn again while typed in.
    setInterval(() => {
      if (document.hidden) return;
      if (state.runs.some((r) => ["running", "waiting"].includes(str(r.status)))) dirty.runs = true;
      if (state.selected && state.detail && str(state.detail.status) === "running") dirty.detail = true;
      render();
    }, 5000);
    // Control nodes come and go without an event: asked again every 5 s.
    setInterval(() => {
      if (!token || document.hidden || !state.cluster) return;
      loadCluster().then(render, () => {});
    }, 5000);
    // Load drifts when events are missed while disconnected: a slow full refresh.
    setInterval(() => {
      if (!token || document.hidden) return;
      refetch.agents = true;
      scheduleRefetch();
    }, 10000);
  }

  let stopGlobal = null;
  async function start() {
    if (!token) {
      $("login").hidden = false;
      setConn(false, "no token");
      return;
    }
    showError("");
    // Subscribe first, so nothing happens between the lists and the stream unseen. The
    // stream starts now (`after=now`): history comes from the lists, so what the page
    // counts as seen live is live; a reconnect resumes from the last id seen (the first
    // event, `start`, carries the point it began).
    if (stopGlobal) stopGlobal();
    stopGlobal = subscribe(
      "/v1/events?after=now",
      (msg) => {
        const ev = decodeEvent(msg);
        if (ev) enqueue(ev);
      },
      {
        onOpen: () => setConn(true, "live"),
        onDown: (e) => setConn(false, e ? "reconnecting: " + e.message : "reconnecting"),
      },
    );
    const results = await Promise.allSettled([loadWhoami(), loadAgents(), loadTree(), loadRuns(), loadGates(), loadCluster()]);
    const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
    if (failed.length) showError("loading: " + failed.join("; "));
    render();
    const linked = /^#run=([0-9a-fA-F-]{1,64})$/.exec(location.hash);
    if (linked && !state.selected) select(linked[1]);
    document.body.setAttribute("data-ready", "true");
  }

  // What the page's other scripts (actions.js, metrics.js) use: a small surface, so they
  // keep their own state and draw into their own elements.
  const hooks = { role: [], detail: [] };
  window.muster = Object.assign(window.muster || {}, {
    api,
    el,
    svg,
    str,
    json,
    shortId,
    fmtTime,
    may,
    showError,
    select: (id) => select(id),
    onRole: (f) => hooks.role.push(f),
    onDetail: (f) => hooks.detail.push(f),
    reloadDetail: () => state.selected && loadDetail(state.selected),
    // Sets the list's extra query parameters (time range, input fields) and reloads it.
    // A filter the node refuses (400) is dropped again, with the error for the caller.
    filterRuns: (extra) => {
      const before = state.runFilter.extra;
      state.runFilter.extra = Object.assign({}, extra);
      state.runPage = 0;
      state.runCursors = [null];
      return loadRuns().then(render, (e) => {
        state.runFilter.extra = before;
        throw e;
      });
    },
  });

  window.MusterRun.init({
    api,
    changed: () => {
      dirty.detail = true;
      render();
    },
  });
  wire();
  start();
})();
