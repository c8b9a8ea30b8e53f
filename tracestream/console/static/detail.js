// The record detail panel, on every page: one record's attributes, resource and fields, its
// stack trace with the app's own frames told apart from library frames, and links to its
// trace, to its service around that moment and to its error issue. Any record row opens it
// (click, or Enter on a focused row); Esc or the close button shuts it. Text only, as everywhere.
"use strict";

TS.detail = (() => {
  const records = new WeakMap();  // row -> the record it shows
  // Frames that are not the app's code, by the rule error issues use to fingerprint (schema.py
  // `_NOT_OURS`): generated code (`<frozen …>`, `<string>`), installed packages, the standard
  // library and tracestream itself.
  const NOT_OURS = /^<|[/\\](?:site|dist)-packages[/\\]|[/\\]lib[/\\]python\d[\d.]*[/\\]|[/\\]tracestream[/\\]/i;
  // `  File "app.py", line 7, in handler` (with `|` prefixes inside exception groups).
  const FRAME = /^([\s|]*)File "([^"]*)", line \d+/;
  const MINUTE_MS = 60_000;
  const panel = TS.el("aside", { id: "detail", class: "detail", hidden: "", tabindex: "-1", "aria-label": "Record detail" });
  document.body.append(panel);
  let selected = null;

  // A traceback as blocks: a frame (its `File` line and the indented source lines under it) or a line.
  function blocks(text) {
    const found = [];
    let frame = null;
    for (const line of String(text).replace(/\n$/, "").split("\n")) {
      const match = FRAME.exec(line);
      const indent = line.length - line.trimStart().length;
      if (match) {
        frame = { lines: [line], indent: match[1].length, kind: NOT_OURS.test(match[2]) ? "frame lib" : "frame app" };
        found.push(frame);
      } else if (frame && line.trim() && indent > frame.indent) {
        frame.lines.push(line);
      } else {
        frame = null;
        found.push({ lines: [line], kind: "tb-line" });
      }
    }
    return found;
  }

  function stackTrace(text) {
    const stack = TS.el("pre", { class: "stack" },
      ...blocks(text).map((block) => TS.el("span", { class: block.kind }, block.lines.join("\n"))));
    const libraries = stack.querySelectorAll(".frame.lib").length;
    const toggle = TS.el("button", { type: "button", class: "lib-toggle" }, `hide ${libraries} library frames`);
    toggle.disabled = libraries === 0;
    toggle.addEventListener("click", () => {
      const hiding = stack.classList.toggle("hide-lib");
      toggle.textContent = `${hiding ? "show" : "hide"} ${libraries} library frames`;
    });
    const legend = TS.el("div", { class: "stack-legend" },
      TS.el("span", { class: "frame app" }, "your code"), TS.el("span", { class: "frame lib" }, "libraries"), toggle);
    return [legend, stack];
  }

  // `search` over the record's service, a minute either side of it.
  function aroundHref(record) {
    const ms = Date.parse(record.timestamp.slice(0, 23) + "Z");
    const iso = (at) => new Date(at).toISOString();
    return "search?" + new URLSearchParams({ service: record.service, since: iso(ms - MINUTE_MS), until: iso(ms + MINUTE_MS) });
  }

  function table(title, values) {
    const entries = Object.entries(values || {}).filter(([, value]) => value !== "" && value !== null);
    if (!entries.length) return [];
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const rows = entries.map(([key, value]) => TS.el("tr", {}, TS.el("th", {}, key),
      TS.el("td", {}, typeof value === "string" ? value : JSON.stringify(value, null, 2))));
    return [TS.el("h3", {}, title), TS.el("table", { class: "kv" }, TS.el("tbody", {}, ...rows))];
  }

  function links(record) {
    const nav = TS.el("nav", { class: "detail-links" });
    if (record.trace_id) nav.append(TS.el("a", { href: TS.traceHref(record.trace_id), class: "to-trace" }, "Trace"));
    if (record.service) {
      nav.append(TS.el("a", { href: aroundHref(record), class: "to-around" }, `${record.service} ±1 min`));
    }
    if (record.fingerprint) {
      const href = "errors?" + new URLSearchParams({ fingerprint: record.fingerprint });
      nav.append(TS.el("a", { href, class: "to-issue" }, "Error issue"));
    }
    return nav;
  }

  function render(record) {
    const close = TS.el("button", { type: "button", class: "close", "aria-label": "Close", title: "Close (Esc)" }, "✕");
    close.addEventListener("click", hide);
    const parts = [
      TS.el("div", { class: "detail-head" },
        TS.el("span", { class: TS.severityClass(record.severity_number) }, record.severity),
        TS.el("span", { class: "time" }, `${TS.time(record.timestamp)} UTC`),
        TS.el("span", { class: "service" }, record.service), close),
      TS.el("pre", { class: "detail-body" }, record.body),
      links(record),
    ];
    if (record.exception_type || record.exception_stacktrace) {
      parts.push(TS.el("h3", {}, "Exception"),
        TS.el("div", { class: "exception" }, `${record.exception_type}: ${record.exception_message}`));
      if (record.exception_stacktrace) parts.push(...stackTrace(record.exception_stacktrace));
    }
    const fields = {
      "trace id": record.trace_id, "span id": record.span_id, scope: record.scope, code: record.code,
      "record id": record.record_id, "stream id": record.id,
    };
    parts.push(...table("Attributes", record.attributes), ...table("Resource", record.resource),
      ...table("Record", fields));
    panel.replaceChildren(...parts);
  }

  function show(record, row) {
    if (selected) selected.classList.remove("selected");
    selected = row || null;
    if (selected) selected.classList.add("selected");
    render(record);
    panel.hidden = false;
    panel.scrollTop = 0;
    panel.focus({ preventScroll: true });
  }

  function hide() {
    panel.hidden = true;
    if (selected) {
      selected.classList.remove("selected");
      selected.focus({ preventScroll: true });
      selected = null;
    }
  }

  function openRow(row) {
    if (records.has(row)) show(records.get(row), row);
  }

  document.addEventListener("click", (event) => {
    if (!(event.target instanceof Element) || event.target.closest("a, button, input, select, .detail")) return;
    if (String(window.getSelection())) return;  // selecting text in a row is not opening it
    const row = event.target.closest("tr.record");
    if (row) openRow(row);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !panel.hidden) hide();
    else if (event.key === "Enter" && event.target instanceof Element && event.target.matches("tr.record")) {
      openRow(event.target);
    }
  });

  return { records, show, hide, stackTrace };
})();
