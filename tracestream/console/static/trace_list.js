// Trace tab without an id: recent traces from the trace list (one row per request or task that
// began a trace, or continued another process's), filtered and sorted on the server. Clicking a
// row opens its waterfall. Text from Redis only reaches the page through TS.el (text nodes).
"use strict";

(() => {
  const section = document.getElementById("trace-list-section");
  const form = document.getElementById("trace-list-filters");
  const target = document.getElementById("trace-list");
  const status = document.getElementById("trace-list-status");

  function row(trace) {
    const href = TS.traceHref(trace.trace_id);
    const name = TS.el("td", { class: "trace-name" }, trace.name);
    if (trace.error) name.append(" ", TS.el("span", { class: "exception" }, "error"));
    const element = TS.el("tr", { class: trace.error ? "trace-row failed" : "trace-row", tabindex: "0",
      "data-trace-id": trace.trace_id },
      TS.el("td", { class: "time" }, TS.time(trace.start)),
      TS.el("td", { class: "num" }, `${trace.duration_ms.toFixed(1)} ms`),
      TS.el("td", { class: "service" }, trace.service),
      name,
      TS.el("td", { class: "trace" }, TS.el("a", { href, class: "trace-link" }, trace.trace_id)));
    element.addEventListener("click", () => { location.href = href; });
    element.addEventListener("keydown", (event) => { if (event.key === "Enter") location.href = href; });
    return element;
  }

  function render(traces) {
    if (!traces.length) {
      target.replaceChildren(TS.el("div", { class: "empty" }, "No traces match these filters."));
      return;
    }
    const head = TS.el("tr", {}, ...["start (UTC)", "duration", "service", "route / task", "trace id"]
      .map((title) => TS.el("th", {}, title)));
    target.replaceChildren(TS.el("table", { class: "trace-list" }, TS.el("thead", {}, head),
      TS.el("tbody", {}, ...traces.map(row))));
  }

  const load = () => TS.withStatus(status, async () => {
    try {
      render((await TS.getJSON("api/traces", TS.formParams(form))).traces);
    } catch (error) {
      TS.showError(target, error);
    }
  });

  const params = new URLSearchParams(location.search);
  TS.bindForm(form, load);
  form.elements.errors.checked = params.get("errors") === "1";
  form.elements.errors.value = "1";
  // A trace opened by id (a link, or the id form) hides the list; the Trace tab itself shows it.
  document.getElementById("filters").addEventListener("submit", () => { section.hidden = true; });
  if (params.get("id")) section.hidden = true;
  else load();
})();
