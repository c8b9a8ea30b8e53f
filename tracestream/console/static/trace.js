// Trace view: the spans of one trace as a waterfall across services, each span's log records and
// child spans under it in time order, as `tracestream trace` draws them.
"use strict";

(() => {
  const form = document.getElementById("filters");
  const target = document.getElementById("trace");
  const status = document.getElementById("status");

  function bar(span, start, total) {
    const left = total > 0 ? ((span.start_ms - start) / total) * 100 : 0;
    const width = total > 0 ? (span.duration_ms / total) * 100 : 100;
    const element = TS.el("div", { class: span.status === "ERROR" ? "bar error" : "bar" });
    element.style.left = `${left}%`;
    element.style.width = `${width}%`;
    return element;
  }

  function logRow(record, depth) {
    const row = TS.recordRow(record);
    row.classList.add("log");
    if (depth === 0) row.title = "outside any stored span";
    return row;
  }

  function spanRow(span, start, total) {
    const name = TS.el("td", { class: "span-name" }, span.name);
    if (span.cycle) {
      name.append(TS.el("span", { class: "cycle", title: `its parent ${span.parent_span_id} descends from it` },
        "parent cycle"));
    }
    name.style.paddingLeft = `${6 + span.depth * 16}px`;
    return TS.el("tr", { class: "span", "data-span-id": span.span_id },
      TS.el("td", { class: "service" }, span.service), name,
      TS.el("td", { class: "num" }, `${span.duration_ms.toFixed(2)} ms`),
      TS.el("td", { class: "bar-cell" }, bar(span, start, total)));
  }

  function render(trace) {
    const spans = trace.rows.filter((row) => row.span).map((row) => row.span);
    const logCount = trace.rows.length - spans.length;
    if (!trace.rows.length) {
      target.replaceChildren(TS.el("div", { class: "empty" }, `No spans or records for trace ${trace.trace_id}.`));
      return;
    }
    const start = Math.min(...spans.map((s) => s.start_ms));
    const end = Math.max(...spans.map((s) => s.start_ms + s.duration_ms));
    const services = new Set(spans.map((s) => s.service));
    const body = TS.el("tbody", {}, ...trace.rows.map((row) =>
      row.span ? spanRow(row.span, start, end - start) : logRow(row.record, row.depth)));
    // A record's row has its time (UTC, as every time the console shows) where a span's has its service.
    const table = TS.el("table", { class: "waterfall" },
      TS.el("thead", {}, TS.el("tr", {}, TS.el("th", {}, "service / time (UTC)"), TS.el("th", {}, "span"),
        TS.el("th", { class: "num" }, "duration"), TS.el("th", {}, "timeline"))), body);
    target.replaceChildren(
      TS.el("h2", {}, `Trace ${trace.trace_id}: ${spans.length} spans across ${services.size} services, ` +
        `${logCount} log records`),
      table);
  }

  const load = (traceId) => TS.withStatus(status, async () => {
    try {
      render(await TS.getJSON("api/trace/" + encodeURIComponent(traceId)));
    } catch (error) {
      TS.showError(target, error);
    }
  });

  TS.bindForm(form, () => load(form.elements.id.value.trim()));
  if (form.elements.id.value) load(form.elements.id.value.trim());
})();
