// Services: the same status table `tracestream services` prints, refreshed every 5 s.
"use strict";

(() => {
  const head = document.getElementById("services-head");
  const rows = document.getElementById("services");
  const status = document.getElementById("status");

  const load = () => TS.withStatus(status, async () => {
    const table = await TS.getJSON("api/services");
    head.replaceChildren(TS.el("tr", {}, ...table.columns.map((name) => TS.el("th", {}, name))));
    rows.replaceChildren(...table.rows.map((row) =>
      TS.el("tr", { class: "service-row" }, ...row.map((cell) => TS.el("td", {}, cell)))));
    if (!table.rows.length) {
      rows.append(TS.el("tr", {}, TS.el("td", { class: "empty" }, "No services have written records yet.")));
    }
  });

  load();
  setInterval(load, 5000);
})();
