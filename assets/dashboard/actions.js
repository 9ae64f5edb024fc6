// muster dashboard: acting on runs (docs/dashboard.md, "Acting from the page"): start a run
// from a form generated from its workflow's input schema, cancel a run, retry a failed run
// from its failed step, and filter the runs by start time and input fields.
//
// The rules of app.js hold here too: every string from the server is set as text, never
// parsed as HTML; a control the token's role may not use is not shown, and the node
// refuses it anyway (403). Everything goes through the API (docs/api.md) with the token.
"use strict";

(function () {
  const m = window.muster;
  if (!m) return;
  const { api, el, str, may } = m;
  const $ = (id) => document.getElementById(id);
  const MAX_DEPTH = 4; // nested objects drawn as fields; deeper ones are JSON text

  // ---------- the form, from a JSON schema ----------

  // The schema a `$ref` to this document's definitions points at (other refs: null).
  function resolve(schema, root) {
    let s = schema;
    for (let i = 0; i < 8 && s && typeof s.$ref === "string"; i++) {
      const m = /^#\/(\$defs|definitions)\/([^/]+)$/.exec(s.$ref);
      s = m && root && root[m[1]] ? root[m[1]][decodeURIComponent(m[2])] : null;
    }
    return s && typeof s === "object" ? s : null;
  }

  // The one type a schema names ("string", or ["string", "null"] -> "string").
  function typeOf(s) {
    if (Array.isArray(s.type)) {
      const t = s.type.filter((t) => t !== "null");
      return t.length === 1 ? t[0] : null;
    }
    return typeof s.type === "string" ? s.type : s.properties ? "object" : null;
  }

  const SCALARS = ["string", "integer", "number", "boolean"];
  function scalarEnum(s) {
    return Array.isArray(s.enum) && s.enum.length > 0 && s.enum.every((v) => v === null || typeof v !== "object");
  }

  // One value of a simple type read from text; throws an Error saying what is wrong.
  function parseScalar(type, text) {
    if (type === "string") return text;
    if (type === "boolean") {
      if (text === "true" || text === "false") return text === "true";
      throw new Error("`" + text + "` is not true or false");
    }
    const n = Number(text);
    if (text.trim() === "" || !isFinite(n)) throw new Error("`" + text + "` is not a number");
    if (type === "integer" && !Number.isInteger(n)) throw new Error("`" + text + "` is not a whole number");
    return n;
  }

  // A control for the field at `path` (["ticket", "priority"]) of schema `s`: returns
  // {node, read}, where read() gives the value, undefined when left empty, or throws.
  function control(s, path, required, root, depth) {
    const name = path.join(".");
    const id = "in-" + path.map((p) => p.replace(/[^A-Za-z0-9_-]/g, "_")).join("--");
    const label = el("label", { for: id }, path[path.length - 1] || "input", required ? el("span", { class: "req", title: "required", text: "*" }) : null);
    const error = el("span", { class: "field-error", "data-testid": "field-error", "data-field": name, hidden: true });
    const wrap = (input, hint) => el("div", { class: "field", "data-field": name }, label, el("div", null, input, hint ? el("div", { class: "muted", text: hint }) : null), error);
    const desc = typeof s.description === "string" ? s.description : "";
    const type = typeOf(s);

    if (scalarEnum(s)) {
      const sel = el("select", { id, "data-testid": "input-" + name }, required ? null : el("option", { value: "", text: "" }), ...s.enum.map((v, i) => el("option", { value: String(i), text: typeof v === "string" ? v : JSON.stringify(v) })));
      return { node: wrap(sel, desc), read: () => (sel.value === "" ? undefined : s.enum[Number(sel.value)]) };
    }
    if (type === "boolean") {
      const box = el("input", { id, type: "checkbox", "data-testid": "input-" + name });
      if (s.default === true) box.checked = true;
      return { node: wrap(box, desc), read: () => box.checked };
    }
    if (type === "string" || type === "integer" || type === "number") {
      const attrs = { id, "data-testid": "input-" + name, type: type === "string" ? "text" : "number" };
      if (type === "integer") attrs.step = "1";
      if (type === "number") attrs.step = "any";
      if (required) attrs["aria-required"] = "true";
      const input = el("input", attrs);
      if (s.default !== undefined && typeof s.default !== "object") input.value = String(s.default);
      return {
        node: wrap(input, desc),
        read: () => (input.value === "" ? undefined : parseScalar(type, input.value)),
      };
    }
    if (type === "array") {
      const items = s.items && typeof s.items === "object" ? resolve(s.items, root) : null;
      const itemType = items && (scalarEnum(items) ? "enum" : typeOf(items));
      if (items && (SCALARS.includes(itemType) || itemType === "enum")) {
        const area = el("textarea", { id, "data-testid": "input-" + name, placeholder: "one " + (itemType === "enum" ? "of " + items.enum.map((v) => JSON.stringify(v)).join(", ") : itemType) + " a line" });
        return {
          node: wrap(area, desc),
          read: () => {
            const lines = area.value.split("\n").map((l) => l.trim()).filter((l) => l !== "");
            if (!lines.length) return undefined;
            return lines.map((l) => (itemType === "enum" ? JSON.parse(l) : parseScalar(itemType, l)));
          },
        };
      }
    }
    if (type === "object" && s.properties && typeof s.properties === "object" && depth < MAX_DEPTH) {
      const req = new Set(Array.isArray(s.required) ? s.required : []);
      const kids = [];
      // Required fields first, each group in the schema's order.
      const names = Object.keys(s.properties);
      const ordered = names.filter((k) => req.has(k)).concat(names.filter((k) => !req.has(k)));
      for (const k of ordered) {
        const sub = s.properties[k];
        const r = resolve(sub, root);
        kids.push([k, r ? control(r, path.concat([k]), req.has(k), root, depth + 1) : jsonControl(path.concat([k]), req.has(k), "")]);
      }
      const read = () => {
        const out = {};
        for (const [k, c] of kids) {
          const v = c.read();
          if (v !== undefined) out[k] = v;
        }
        return Object.keys(out).length || required || depth === 0 ? out : undefined;
      };
      const fields = kids.map(([, c]) => c.node);
      if (depth === 0) return { node: el("div", { "data-field": "" }, ...fields), read };
      return { node: wrap(el("fieldset", null, ...fields), desc), read };
    }
    return jsonControl(path, required, desc);
  }

  // What the generator cannot draw: the field's JSON, as text.
  function jsonControl(path, required, desc) {
    const name = path.join(".");
    const id = "in-" + path.map((p) => p.replace(/[^A-Za-z0-9_-]/g, "_")).join("--");
    const label = el("label", { for: id }, path[path.length - 1] || "input", required ? el("span", { class: "req", title: "required", text: "*" }) : null);
    const error = el("span", { class: "field-error", "data-testid": "field-error", "data-field": name, hidden: true });
    const area = el("textarea", { id, "data-testid": "input-" + (name || "json"), placeholder: "JSON" });
    return {
      node: el("div", { class: "field", "data-field": name }, label, el("div", null, area, el("div", { class: "muted", text: (desc ? desc + " · " : "") + "as JSON" })), error),
      read: () => {
        if (area.value.trim() === "") return undefined;
        try {
          return JSON.parse(area.value);
        } catch (e) {
          throw new Error("not JSON: " + e.message);
        }
      },
    };
  }

  // Shows `msg` next to the field named `name` (dotted), else next to the form.
  function fieldError(form, name, msg) {
    let box = null;
    for (const e of form.querySelectorAll(".field-error")) if (e.getAttribute("data-field") === name) box = e;
    if (!box) box = form.querySelector('.field-error[data-field="*"]');
    box.hidden = false;
    box.textContent = (box.textContent ? box.textContent + "; " : "") + msg;
  }

  function clearErrors(form) {
    for (const e of form.querySelectorAll(".field-error")) {
      e.hidden = true;
      e.textContent = "";
    }
  }

  // The fields a 422's message names: "at /ticket/priority: ..." and
  // "at /ticket: \"priority\" is a required property" both name ticket.priority.
  function namedFields(message) {
    const out = [];
    const re = /at (\/[^:]*): ([^;]*)/g;
    let hit;
    while ((hit = re.exec(message)) !== null) {
      const path = hit[1].split("/").filter((p) => p !== "").map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
      const req = /^"([^"]+)" is a required property/.exec(hit[2]);
      if (req) path.push(req[1]);
      out.push([path.join("."), hit[2]]);
    }
    return out;
  }

  // ---------- Start a run ----------
  let workflows = null;
  let drawnFor = null; // the role the panel was drawn for (a reconnect keeps the form)

  async function drawStart(role) {
    const panel = $("start-panel");
    if (drawnFor === role) return;
    drawnFor = role;
    if (!may("submitter")) {
      panel.hidden = true;
      return;
    }
    if (workflows === null) {
      try {
        const body = await api("GET", "/v1/workflows");
        workflows = Array.isArray(body && body.workflows) ? body.workflows : [];
      } catch (e) {
        workflows = [];
        m.showError("workflows: " + e.message);
      }
    }
    const pick = el("select", { "data-testid": "start-workflow" }, el("option", { value: "", text: "choose a workflow…" }), ...workflows.map((w) => el("option", { value: str(w.name), text: str(w.name) })));
    const about = el("span", { class: "muted", "data-testid": "start-about" });
    const form = el("form", { "data-testid": "start-form", novalidate: true });
    panel.replaceChildren(el("h2", { text: "Start a run" }), el("div", { class: "bar" }, pick, about), form);
    panel.hidden = false;
    pick.addEventListener("change", () => drawForm(pick.value, form, about));
  }

  async function drawForm(name, form, about) {
    form.replaceChildren();
    about.textContent = "";
    if (!name) return;
    let wf;
    try {
      wf = await api("GET", "/v1/workflows/" + encodeURIComponent(name));
    } catch (e) {
      about.textContent = e.message;
      return;
    }
    about.textContent = str(wf.description);
    const schema = wf.input_schema && typeof wf.input_schema === "object" ? wf.input_schema : {};
    const root = resolve(schema, schema) || {};
    const c = typeOf(root) === "object" && root.properties ? control(root, [], true, schema, 0) : jsonControl([], true, "the run input");
    const formError = el("span", { class: "field-error", "data-testid": "start-error", "data-field": "*", hidden: true });
    const result = el("span", { class: "muted", "data-testid": "start-result" });
    const submit = el("button", { type: "submit", "data-testid": "start-submit", text: "Start " + name });
    form.replaceChildren(c.node, el("div", { class: "bar" }, submit, result), formError);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      result.textContent = "";
      let input;
      try {
        input = c.read();
      } catch (e) {
        fieldError(form, "*", e.message);
        return;
      }
      submit.disabled = true;
      try {
        const r = await api("POST", "/v1/runs", { workflow: name, input: input === undefined ? {} : input });
        result.textContent = "started run " + str(r.run);
        result.setAttribute("data-run", str(r.run));
        m.select(str(r.run));
      } catch (e) {
        const msg = str(e.body && e.body.error) || e.message;
        const fields = e.status === 422 ? namedFields(msg) : [];
        if (fields.length) for (const [f, text] of fields) fieldError(form, f, text);
        else fieldError(form, "*", msg);
        if (e.status === 422) form.querySelector(".field-error:not([hidden])").setAttribute("data-status", "422");
      } finally {
        submit.disabled = false;
      }
    });
  }

  // ---------- Cancel and Retry, in a run's detail ----------
  let shown = ""; // what the actions were drawn for: redrawn only when it changes

  function drawActions(id, d) {
    const box = $("run-actions");
    const status = str(d && d.status);
    const retryOf = d && d.retry_of ? str(d.retry_of.run) : "";
    const retriedAs = d && d.retried_as ? str(d.retried_as.run) : "";
    const key = [id, status, retryOf, retriedAs, str(document.body.getAttribute("data-role"))].join("|");
    if (key === shown) return;
    shown = key;
    const kids = [];
    const note = el("span", { class: "muted", "data-testid": "run-action-result" });
    if (d && retryOf) {
      kids.push(el("span", { class: "muted", "data-testid": "run-retry-of" }, "retry of ", link(retryOf), " from step ", str(d.retry_of.step)));
    }
    if (d && retriedAs) {
      kids.push(el("span", { class: "muted", "data-testid": "run-retried-as" }, "retried as ", link(retriedAs)));
    }
    if (d && may("submitter") && (status === "running" || status === "waiting")) {
      kids.push(confirmButton("Cancel run", "danger", "run-cancel", "Cancel this run? Its tasks in flight are cancelled.", "Yes, cancel", true, async (reason) => {
        await api("POST", "/v1/runs/" + encodeURIComponent(id) + "/cancel", { reason });
        note.textContent = "cancelled";
      }, note));
    }
    if (d && may("submitter") && status === "failed" && !retriedAs) {
      const at = str(d.step);
      kids.push(confirmButton("Retry from " + (at ? "`" + at + "`" : "the failed step"), "", "run-retry", "Start a new run from the failed step, with the earlier steps' outputs carried over?", "Yes, retry", false, async () => {
        const r = await api("POST", "/v1/runs/" + encodeURIComponent(id) + "/retry");
        note.textContent = "retry started: run " + str(r.run) + " from step " + str(r.step);
        m.select(str(r.run));
      }, note));
    }
    kids.push(note);
    box.replaceChildren(...kids);
  }

  function link(run) {
    const a = el("a", { href: "#run=" + encodeURIComponent(run), "data-run": run, text: m.shortId(run) });
    a.addEventListener("click", (e) => {
      e.preventDefault();
      m.select(run);
    });
    return a;
  }

  // A button that asks before it acts: a second, explicit click on "Yes" does it.
  function confirmButton(label, cls, testid, question, yes, withReason, act, note) {
    const button = el("button", { type: "button", class: cls, "data-testid": testid, text: label });
    const span = el("span", null, button);
    button.addEventListener("click", () => {
      const reason = withReason ? el("input", { type: "text", placeholder: "reason (journaled)", "data-testid": testid + "-reason" }) : null;
      const ok = el("button", { type: "button", class: cls, "data-testid": testid + "-confirm", text: yes });
      const no = el("button", { type: "button", "data-testid": testid + "-no", text: "No" });
      const ask = el("span", { class: "confirm", "data-testid": testid + "-ask" }, question, " ", reason, ok, no);
      span.replaceChildren(ask);
      no.addEventListener("click", () => span.replaceChildren(button));
      ok.addEventListener("click", async () => {
        ok.disabled = true;
        try {
          await act(reason ? reason.value : "");
          span.replaceChildren();
          m.reloadDetail();
        } catch (e) {
          note.textContent = str(e.body && e.body.error) || e.message;
          span.replaceChildren(button);
        }
      });
    });
    return span;
  }

  // ---------- Filters: start time range and input fields ----------
  function drawFilters() {
    const after = el("input", { type: "datetime-local", step: "1", "data-testid": "runs-started-after", "data-field": "started_after", title: "started at or after" });
    const before = el("input", { type: "datetime-local", step: "1", "data-testid": "runs-started-before", "data-field": "started_before", title: "started before" });
    const input = el("input", { type: "search", "data-testid": "runs-input", "data-field": "input", placeholder: "input.FIELD=value; …", size: 28 });
    const apply = el("button", { type: "button", "data-testid": "runs-filter-apply", text: "filter" });
    const clear = el("button", { type: "button", "data-testid": "runs-filter-clear", text: "clear" });
    const error = el("span", { class: "field-error", "data-testid": "runs-filter-error", hidden: true });
    const ms = (v) => (v ? String(new Date(v).getTime()) : "");
    const run = async () => {
      error.hidden = true;
      error.textContent = "";
      for (const e of [after, before, input]) e.removeAttribute("aria-invalid");
      const extra = { started_after: ms(after.value), started_before: ms(before.value) };
      for (const part of input.value.split(";")) {
        const p = part.trim();
        if (!p) continue;
        const eq = p.indexOf("=");
        const k = (eq < 0 ? p : p.slice(0, eq)).trim().replace(/^input\./, "");
        extra["input." + k] = eq < 0 ? "" : p.slice(eq + 1).trim();
      }
      try {
        await m.filterRuns(extra);
      } catch (e) {
        const field = str(e.body && e.body.field);
        error.hidden = false;
        error.setAttribute("data-field", field);
        error.textContent = str(e.body && e.body.error) || e.message;
        const at = field.startsWith("input.") ? input : field === "started_after" ? after : field === "started_before" ? before : null;
        if (at) at.setAttribute("aria-invalid", "true");
      }
    };
    apply.addEventListener("click", run);
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") run();
    });
    clear.addEventListener("click", () => {
      after.value = "";
      before.value = "";
      input.value = "";
      run();
    });
    $("runs-filters").replaceChildren(el("span", { class: "muted", text: "started" }), after, el("span", { class: "muted", text: "to" }), before, input, apply, clear, error);
  }

  m.onRole((role) => {
    drawStart(role);
    shown = "";
  });
  m.onDetail(drawActions);
  drawFilters();
})();
