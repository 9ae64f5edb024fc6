// muster dashboard: what a run's LLM agents did — the run's model usage in words, a row
// per attempt that called a model, and each attempt's prompt view (docs/dashboard.md).
//
// Rules this file keeps (as app.js does):
// - Every string from the server (prompts and answers above all) is set with textContent or
//   setAttribute, never parsed as HTML: a model answering markup shows markup as text.
// - It draws with app.js's helpers (`window.muster.el`, `.str`): one definition per page.
// - It reads only through the `api` function app.js hands it (the page's token, the same
//   routes): the run document, then `GET /v1/tasks/{id}/llm?epoch=E` when a prompt view is
//   opened. Nothing is fetched until a person asks for it.
// - app.js calls `musterLlm.renderRun(box, run, api)` whenever the run's detail is drawn;
//   the section is rebuilt only when what it shows changed, so an open prompt view keeps
//   its place while the run's events stream in.
"use strict";

window.musterLlm = (function () {
  const TEXT_SHOWN = 20000; // characters of one message shown (the node already bounds them)

  // The page's one definition of these helpers is app.js's (`window.muster`). This file
  // loads before app.js, which calls `renderRun` only once it has set them, and every
  // other function here runs from `renderRun` or from a click on what it drew.
  const el = (...args) => window.muster.el(...args);
  const str = (v) => window.muster.str(v);

  // A count, or `unknown` when the server did not report it (never 0).
  function count(n) {
    return typeof n === "number" ? n.toLocaleString("en-US") : "unknown";
  }

  function money(c) {
    if (typeof c !== "number") return "";
    return c.toFixed(c > 0 && c < 0.01 ? 6 : 4);
  }

  function clip(s) {
    const t = str(s);
    return t.length > TEXT_SHOWN ? t.slice(0, TEXT_SHOWN) + "\n… (" + t.length + " characters)" : t;
  }

  // One attempt's (or one call's) usage in words: `2 calls · 54 tokens (40 prompt + 14
  // completion) · cost 0.0001`.
  function usageWords(u) {
    if (!u || typeof u !== "object") return "";
    const parts = [];
    if (typeof u.calls === "number") parts.push(u.calls + (u.calls === 1 ? " call" : " calls"));
    parts.push(count(u.total_tokens) + " tokens (" + count(u.prompt_tokens) + " prompt + " + count(u.completion_tokens) + " completion)");
    if (typeof u.cost === "number") parts.push("cost " + money(u.cost));
    return parts.join(" · ");
  }

  // The run's totals (`usage` of GET /v1/runs/{id}) as a small table.
  function totalsTable(t) {
    const cells = [
      ["model calls", count(t.calls)],
      ["attempts", count(t.attempts)],
      ["prompt tokens", count(t.prompt_tokens)],
      ["completion tokens", count(t.completion_tokens)],
      ["total tokens", count(t.total_tokens)],
    ];
    if (typeof t.cost === "number") cells.push(["cost", money(t.cost)]);
    if (t.unknown_attempts) cells.push(["attempts with unknown tokens", count(t.unknown_attempts)]);
    return el(
      "table",
      { class: "llm-totals", "data-testid": "run-llm-usage" },
      el("thead", null, el("tr", null, ...cells.map(([k]) => el("th", { text: k })))),
      el("tbody", null, el("tr", null, ...cells.map(([k, v]) => el("td", { "data-field": k, text: v })))),
    );
  }

  // Attempts of the run that called a model, from its steps' leases.
  function attemptsOf(run) {
    const out = [];
    for (const s of Array.isArray(run.steps) ? run.steps : []) {
      for (const l of Array.isArray(s.leases) ? s.leases : []) {
        if (l.usage || l.model_calls) out.push({ task: str(s.task), step: str(s.step || s.capability), lease: l });
      }
    }
    return out;
  }

  let shownRun = null;
  let view = null; // the open prompt view, kept across redraws of the section
  let opened = ""; // "task/epoch" of the open view

  function renderRun(box, run, api) {
    if (!box) return;
    const id = str(run && (run.id || run.run));
    if (id !== shownRun) {
      shownRun = id;
      view = null;
      opened = "";
      box.removeAttribute("data-sig");
    }
    const attempts = attemptsOf(run || {});
    const totals = run && run.usage && typeof run.usage === "object" ? run.usage : null;
    const sig = JSON.stringify([id, totals, attempts.map((a) => [a.task, a.lease.epoch, a.lease.outcome, a.lease.model_calls, a.lease.usage])]);
    if (box.getAttribute("data-sig") === sig) return;
    box.setAttribute("data-sig", sig);
    box.hidden = !totals && !attempts.length;
    if (box.hidden) return box.replaceChildren();
    const rows = attempts.map((a) => {
      const l = a.lease;
      const key = a.task + "/" + str(l.epoch);
      const open = l.model_calls
        ? el("button", {
            type: "button",
            class: "small",
            "data-testid": "llm-open",
            "data-task": a.task,
            "data-epoch": str(l.epoch),
            text: "prompts (" + l.model_calls + ")",
            onclick: () => openView(box, api, a, key),
          })
        : el("span", { class: "muted", text: "not recorded", title: "the agent's manifest does not set record = \"prompts\"" });
      return el(
        "tr",
        { "data-testid": "llm-attempt", "data-task": a.task, "data-epoch": str(l.epoch) },
        el("td", { class: "mono", text: a.step }),
        el("td", { text: str(l.attempt) }),
        el("td", { class: "mono", text: str(l.agent) }),
        el("td", { text: str(l.epoch) }),
        el("td", null, el("span", { class: "st st-" + str(l.outcome).replace(/[^a-z0-9_-]/gi, ""), text: str(l.outcome) })),
        el("td", { text: usageWords(l.usage) || "no usage journaled" }),
        el("td", null, open),
      );
    });
    const parts = [el("h3", { text: "LLM usage" })];
    if (totals) parts.push(totalsTable(totals));
    if (rows.length) {
      parts.push(
        el(
          "table",
          { class: "llm-attempts" },
          el("thead", null, el("tr", null, ...["step", "attempt", "agent", "epoch", "outcome", "usage", ""].map((h) => el("th", { text: h })))),
          el("tbody", null, ...rows),
        ),
      );
    }
    if (view) parts.push(view);
    box.replaceChildren(...parts);
  }

  async function openView(box, api, a, key) {
    if (opened === key && view) {
      // A second click closes it.
      view.remove();
      view = null;
      opened = "";
      return;
    }
    // One prompt view at a time: the one open (another attempt's) goes.
    if (view) view.remove();
    opened = key;
    view = el("div", { class: "llm-view", "data-testid": "llm-view", "data-task": a.task, "data-epoch": str(a.lease.epoch) }, el("p", { class: "muted", text: "loading the calls…" }));
    box.append(view);
    const mine = view;
    let doc;
    try {
      doc = await api("GET", "/v1/tasks/" + encodeURIComponent(a.task) + "/llm?epoch=" + encodeURIComponent(str(a.lease.epoch)));
    } catch (e) {
      if (view === mine) mine.replaceChildren(el("p", { class: "error", text: "the calls of " + key + ": " + e.message }));
      return;
    }
    if (view !== mine) return;
    mine.replaceChildren(...callsView(a, doc || {}));
    mine.setAttribute("data-loaded", "true");
    mine.scrollIntoView({ block: "nearest" });
  }

  function callsView(a, doc) {
    const l = a.lease;
    const calls = Array.isArray(doc.calls) ? doc.calls : [];
    const out = [
      el(
        "h4",
        null,
        "Prompts of " + a.step + " · attempt " + str(l.attempt) + " · " + str(l.agent) + " · epoch " + str(l.epoch),
        el("button", { type: "button", class: "small", "data-testid": "llm-close", text: "close", onclick: () => {
          if (view) view.remove();
          view = null;
          opened = "";
        } }),
      ),
    ];
    if (!calls.length) out.push(el("p", { class: "muted", text: "no calls recorded for this attempt" }));
    if (doc.omitted) out.push(el("p", { class: "muted", text: doc.omitted + " more calls not shown" }));
    for (const c of calls) out.push(callView(c));
    return out;
  }

  function callView(c) {
    const facts = [];
    if (c.model) facts.push(str(c.model));
    if (c.usage) facts.push(usageWords(Object.assign({}, c.usage, { calls: undefined })));
    if (typeof c.latency_ms === "number") facts.push(c.latency_ms < 1 ? "under 1 ms" : c.latency_ms.toLocaleString("en-US") + " ms");
    if (c.truncated) facts.push("cut to the record's bounds");
    const messages = (Array.isArray(c.messages) ? c.messages : []).map((m) =>
      el(
        "div",
        { class: "llm-msg", "data-testid": "llm-message", "data-role": str(m.role) },
        el("span", { class: "llm-role", text: str(m.role) }),
        el("pre", { text: clip(m.content) }),
      ),
    );
    const result =
      c.error !== undefined && c.error !== null
        ? el("div", { class: "llm-msg llm-error", "data-testid": "llm-error" }, el("span", { class: "llm-role", text: "failed" }), el("pre", { text: clip(c.error) }))
        : el("div", { class: "llm-msg llm-answer", "data-testid": "llm-answer" }, el("span", { class: "llm-role", text: "answer" }), el("pre", { text: clip(c.answer) }));
    return el(
      "section",
      { class: "llm-call", "data-testid": "llm-call", "data-kind": str(c.kind), "data-turn": str(c.turn) },
      el("div", { class: "llm-head" }, el("strong", { "data-testid": "llm-turn", text: str(c.label || c.kind) }), el("span", { class: "muted", "data-testid": "llm-facts", text: facts.join(" · ") })),
      el("details", { open: "" }, el("summary", { text: messages.length + (messages.length === 1 ? " message sent" : " messages sent") }), ...messages),
      result,
    );
  }

  return { renderRun, usageWords };
})();
