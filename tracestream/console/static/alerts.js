// Alerts: what `tracestream alerts status` shows, and the newest notifications with their trace
// links, refreshed every 5 s. Read-only; rule names, messages and errors are rendered as text.
"use strict";

(() => {
  const status = document.getElementById("status");
  const evaluated = document.getElementById("evaluated");
  const rules = document.getElementById("rules");
  const notifications = document.getElementById("notifications");
  const failed = document.getElementById("failed");
  const stateClass = { firing: "sev sev-error", pending: "sev sev-warn", ok: "sev sev-info",
    resolved: "sev sev-info" };

  const cell = (text, className) => TS.el("td", className ? { class: className } : {}, text);
  const empty = (columns, text) => TS.el("tr", {}, TS.el("td", { class: "empty", colspan: String(columns) }, text));
  const value = (number) => (number === null || number === undefined ? "" : String(number));

  const ruleRow = (rule) => TS.el("tr", { class: "alert-rule" },
    cell(rule.rule, "rule-name"),
    cell(rule.status, stateClass[rule.status] || "sev"),
    cell(rule.since ? TS.time(rule.since) : "", "time"),
    cell(value(rule.value), "num"),
    cell(rule.condition),
    cell(rule.kind),
    cell((rule.notify || []).join(", ")));

  const sampleList = (samples) => {
    const list = TS.el("div", {});
    for (const found of samples) {
      list.append(TS.el("div", { class: "sample" },
        TS.el("span", { class: "service" }, found.service), " ",
        TS.el("span", { class: "msg" }, found.body), " ",
        TS.traceLink(found.trace_id)));
    }
    return list;
  };

  const notificationRow = (note) => TS.el("tr", { class: "notification" },
    cell(TS.time(note.at), "time"),
    cell(note.rule, "rule-name"),
    cell(note.state + (note.repeat ? " (repeat)" : ""), stateClass[note.state] || "sev"),
    cell(value(note.value), "num"),
    cell(value(note.count), "num"),
    TS.el("td", { class: "body" }, sampleList(note.samples)),
    TS.el("td", {}, note.search ? TS.el("a", { href: note.search }, "search") : ""));

  const failedRow = (delivery) => TS.el("tr", { class: "failed-delivery" },
    cell(TS.time(delivery.at), "time"),
    cell(delivery.id),
    cell(delivery.target),
    cell(delivery.url),
    cell(delivery.error),
    cell(delivery.attempt, "num"));

  const load = () => TS.withStatus(status, async () => {
    const found = await TS.getJSON("api/alerts");
    evaluated.textContent = found.evaluated ? `rules last evaluated ${TS.time(found.evaluated)} UTC`
      : "no runner has evaluated rules on this stream yet (tracestream alerts run)";
    rules.replaceChildren(...found.rules.map(ruleRow));
    if (!found.rules.length) rules.append(empty(7, "No alert rules have run on this stream."));
    notifications.replaceChildren(...found.notifications.map(notificationRow));
    if (!found.notifications.length) notifications.append(empty(7, "No notifications yet."));
    failed.replaceChildren(...found.failed_deliveries.map(failedRow));
    if (!found.failed_deliveries.length) failed.append(empty(6, "None."));
  });

  TS.refreshEvery(5000, load);
})();
