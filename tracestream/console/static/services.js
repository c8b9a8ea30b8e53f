// Services: the same status table `tracestream services` prints, refreshed 5 s after each answer. Each service
// links to its records (search), its error count to its error issues, and an estimated rate
// (sampled traces' records count for their weight, docs/sampling.md) says so in its title.
"use strict";

(() => {
  const head = document.getElementById("services-head");
  const rows = document.getElementById("services");
  const status = document.getElementById("status");
  const link = (path, params, text, className) =>
    TS.el("a", { href: path + "?" + new URLSearchParams(params), class: className }, text);

  function cells(row, counts) {
    const [service, lastSeen, rate, errors, instances] = row;
    const rateCell = TS.el("td", { class: "num" }, rate);
    if (counts.estimated) {
      rateCell.replaceChildren(TS.el("abbr", { class: "estimated", title: `estimated: about ${counts.records_last_hour.toLocaleString("en-US")} `
        + `records in the last hour from ${counts.stored_last_hour.toLocaleString("en-US")} stored; records of sampled `
        + "traces count for their sample weight" }, rate));
    }
    return [
      TS.el("td", { class: "service" }, link("search", { service }, service, "to-search")),
      TS.el("td", {}, lastSeen),
      rateCell,
      TS.el("td", { class: "num" }, errors ? link("errors", { service }, errors, "to-errors") : errors),
      TS.el("td", { class: "num" }, instances),
    ];
  }

  const load = () => TS.withStatus(status, async () => {
    const table = await TS.getJSON("api/services");
    head.replaceChildren(TS.el("tr", {}, ...table.columns.map((name) => TS.el("th", {}, name))));
    rows.replaceChildren(...table.rows.map((row, i) => TS.el("tr", { class: "service-row" }, ...cells(row, table.counts[i]))));
    if (!table.rows.length) {
      rows.append(TS.el("tr", {}, TS.el("td", { class: "empty" }, "No services have written records yet.")));
    }
  });

  TS.refreshEvery(5000, load);
})();
