// Shared helpers. Log content only ever reaches the page as text nodes or attribute values set
// through DOM APIs; nothing here parses strings as HTML.
"use strict";

// Bidi controls reorder what is read after them (a service name, a message): shown as escapes,
// as the CLI shows them.
const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

const TS = {
  el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else node.setAttribute(key, TS.shown(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : TS.shown(child));
    }
    return node;
  },

  shown(value) {
    return String(value).replace(BIDI_CONTROLS, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  },

  severityClass(number) {
    if (number >= 21) return "sev sev-fatal";
    if (number >= 17) return "sev sev-error";
    if (number >= 13) return "sev sev-warn";
    if (number >= 9) return "sev sev-info";
    return "sev sev-debug";
  },

  time(iso) {
    return String(iso).replace("T", " ").replace("Z", "");
  },

  traceHref(traceId) {
    return "trace?" + new URLSearchParams({ id: traceId });
  },

  traceLink(traceId) {
    if (!traceId) return "";
    return TS.el("a", { href: TS.traceHref(traceId), class: "trace-link", title: traceId }, traceId.slice(0, 12) + "…");
  },

  // Timestamps are fixed-width ISO strings (`2024-05-01T12:00:00.123456Z`), so they sort as text.
  newerFirst(a, b) {
    return a.timestamp < b.timestamp ? 1 : a.timestamp > b.timestamp ? -1 : 0;
  },

  // One line per record; its attributes show on demand (the "attrs" toggle, or the detail panel).
  recordRow(record) {
    const line = TS.el("div", { class: "line" }, TS.el("span", { class: "msg" }, record.body));
    if (record.exception_type) {
      line.append(TS.el("span", { class: "exception" }, `${record.exception_type}: ${record.exception_message}`));
    }
    const body = TS.el("td", { class: "body" }, line);
    const names = Object.keys(record.attributes || {});
    if (names.length) {
      const attrs = TS.el("div", { class: "attrs", hidden: "" },
        Object.entries(record.attributes).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
          .join("  "));
      const toggle = TS.el("button", { type: "button", class: "attrs-toggle", title: names.join(", ") },
        `${names.length} attr${names.length === 1 ? "" : "s"}`);
      toggle.addEventListener("click", (event) => {
        event.stopPropagation();
        attrs.hidden = !attrs.hidden;
      });
      line.append(toggle);
      body.append(attrs);
    }
    const row = TS.el("tr", { class: "record", "data-id": record.id, "data-ts": record.timestamp, tabindex: "0" },
      TS.el("td", { class: "time" }, TS.time(record.timestamp)),
      TS.el("td", { class: TS.severityClass(record.severity_number) }, record.severity),
      TS.el("td", { class: "service", title: record.service }, record.service),
      body,
      TS.el("td", { class: "trace" }, TS.traceLink(record.trace_id)));
    TS.detail.records.set(row, record);
    return row;
  },

  // Puts `row` among `rows` (newest first) by its timestamp: records of several services reach
  // the stream in their batches' order, not their own.
  insertByTime(rows, row) {
    let next = rows.firstElementChild;
    while (next && next.dataset.ts > row.dataset.ts) next = next.nextElementSibling;
    rows.insertBefore(row, next);
  },

  async getJSON(path, params) {
    const query = params ? "?" + new URLSearchParams(params) : "";
    const response = await fetch(path + query, { credentials: "same-origin" });
    if (!response.ok) {
      const text = (await response.text()).trim();
      const json = (response.headers.get("content-type") || "").startsWith("application/json");
      throw new Error(`${response.status}: ${json ? JSON.parse(text).error : text}`);
    }
    return response.json();
  },

  // Form fields <-> URL query, so every view is a shareable link.
  formParams(form) {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (String(value).trim()) params.set(key, String(value).trim());
    return params;
  },

  fillForm(form, params) {
    for (const [key, value] of params) if (form.elements[key]) form.elements[key].value = value;
  },

  setStatus(element, text, kind) {
    element.textContent = TS.shown(text);
    element.className = "status " + (kind || "");
  },

  // Runs `work`, showing progress and any error in the status element.
  async withStatus(status, work) {
    TS.setStatus(status, "loading…");
    try {
      await work();
      TS.setStatus(status, "");
    } catch (error) {
      TS.setStatus(status, String(error.message || error), "error");
    }
  },

  // `load` now, then `ms` after each load has finished: a page whose answer takes longer than that
  // (Services over millions of records) asked again while Redis still worked on the last one.
  refreshEvery(ms, load) {
    const next = async () => {
      await load();
      setTimeout(next, ms);
    };
    next();
  },

  // Fills the form from the address bar, and on submit puts it back there and calls `apply`.
  bindForm(form, apply) {
    TS.fillForm(form, new URLSearchParams(location.search));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      history.replaceState(null, "", "?" + TS.formParams(form));
      apply();
    });
  },

  showError(target, error) {
    target.replaceChildren(TS.el("div", { class: "empty status error" }, String(error.message || error)));
  },
};
