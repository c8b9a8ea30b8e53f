// Trace view: the spans of one trace as a waterfall across services, each followed by the
// log records written inside it.
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

  function logRow(record) {
    const row = TS.recordRow(record);
    row.classList.add("log");
    return row;
  }

  function render(trace) {
    const logCount = trace.spans.reduce((n, s) => n + s.logs.length, trace.unattached_logs.length);
    if (!trace.spans.length && !logCount) {
      target.replaceChildren(TS.el("div", { class: "empty" }, `No spans or records for trace ${trace.trace_id}.`));
      return;
    }
    const start = Math.min(...trace.spans.map((s) => s.start_ms));
    const end = Math.max(...trace.spans.map((s) => s.start_ms + s.duration_ms));
    const services = new Set(trace.spans.map((s) => s.service));
    const body = TS.el("tbody");
    for (const span of trace.spans) {
      const name = TS.el("td", { class: "span-name" }, span.name);
      if (span.cycle) {
        name.append(TS.el("span", { class: "cycle", title: `its parent ${span.parent_span_id} descends from it` },
          "parent cycle"));
      }
      name.style.paddingLeft = `${6 + span.depth * 16}px`;
      body.append(TS.el("tr", { class: "span", "data-span-id": span.span_id },
        TS.el("td", { class: "service" }, span.service), name,
        TS.el("td", { class: "num" }, `${span.duration_ms.toFixed(2)} ms`),
        TS.el("td", { class: "bar-cell" }, bar(span, start, end - start))));
      for (const record of span.logs) body.append(logRow(record));
    }
    const table = TS.el("table", { class: "waterfall" },
      TS.el("thead", {}, TS.el("tr", {}, TS.el("th", {}, "service"), TS.el("th", {}, "span"),
        TS.el("th", { class: "num" }, "duration"), TS.el("th", {}, "timeline"))), body);
    const parts = [
      TS.el("h2", {}, `Trace ${trace.trace_id}: ${trace.spans.length} spans across ${services.size} services, ` +
        `${logCount} log records`),
      table,
    ];
    if (trace.unattached_logs.length) {
      parts.push(TS.el("h2", {}, "Records outside any stored span"),
        TS.el("table", {}, TS.el("tbody", {}, ...trace.unattached_logs.map(logRow))));
    }
    target.replaceChildren(...parts);
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
