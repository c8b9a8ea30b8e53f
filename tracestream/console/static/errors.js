// Errors: error issues as `tracestream errors` lists them (filters since, service, status), and with
// `?fingerprint=` one issue's page: its figures, causal chain, sample traces and the newest record's
// stack trace. Read-only: statuses change from the CLI. Text only reaches the page through TS.el.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const form = document.getElementById("filters");
  const status = document.getElementById("status");
  const list = document.getElementById("issue-list");
  const rows = document.getElementById("issues");
  const single = document.getElementById("issue");

  const number = (n) => Number(n).toLocaleString("en-US");
  const issueHref = (fingerprint) => "errors?" + new URLSearchParams({ fingerprint });
  const errorText = (issue) => (issue.type ? `${issue.type}: ${issue.message}` : issue.message);

  // The last 24 hours, oldest first, one bar an hour scaled to the busiest; each bar titled with its count.
  function sparkline(hourly, width, height) {
    const top = Math.max(1, ...hourly);
    const step = width / hourly.length;
    const root = document.createElementNS(SVG, "svg");
    for (const [key, value] of Object.entries({ class: "sparkline", width, height, viewBox: `0 0 ${width} ${height}`,
      role: "img", "aria-label": `${hourly.reduce((a, b) => a + b, 0)} in the last 24 hours` })) {
      root.setAttribute(key, String(value));
    }
    hourly.forEach((count, i) => {
      const bar = document.createElementNS(SVG, "rect");
      const h = count ? Math.max(2, (count / top) * height) : 1;
      for (const [key, value] of Object.entries({ x: i * step, y: height - h, width: Math.max(1, step - 1), height: h,
        fill: count ? "#ff7b72" : "#2a323c" })) {
        bar.setAttribute(key, String(value));
      }
      const title = document.createElementNS(SVG, "title");
      const ago = hourly.length - 1 - i;
      title.textContent = `${ago ? `${ago} h ago` : "this hour"}: ${number(count)}`;
      bar.append(title);
      root.append(bar);
    });
    return root;
  }

  function statusMark(issue) {
    const mark = TS.el("span", { class: `issue-status ${issue.status}` }, issue.status);
    if (!issue.regression) return mark;
    return TS.el("span", {}, mark, " ", TS.el("span", { class: "regression", title: "resolved, then seen again" }, "regression"));
  }

  const via = (issue) => issue.chain.slice(0, 3).map((link) => `${link.route} (${number(link.count)})`).join(", ");

  function issueRow(issue) {
    return TS.el("tr", { class: "issue-row", "data-fingerprint": issue.fingerprint },
      TS.el("td", { class: "body" }, TS.el("a", { href: issueHref(issue.fingerprint), class: "issue-link" }, errorText(issue)),
        TS.el("div", { class: "fingerprint" }, issue.fingerprint)),
      TS.el("td", { class: "service" }, (issue.services.length ? issue.services : [issue.service]).join(", ")),
      TS.el("td", { class: "num" }, number(issue.count)),
      TS.el("td", {}, sparkline(issue.hourly, 96, 20)),
      TS.el("td", { class: "time" }, TS.time(issue.first_seen).slice(0, 19)),
      TS.el("td", { class: "time" }, TS.time(issue.last_seen).slice(0, 19)),
      TS.el("td", {}, statusMark(issue)),
      TS.el("td", { class: "chain" }, via(issue)));
  }

  function facts(issue) {
    const values = [
      ["fingerprint", issue.fingerprint],
      ["status", statusMark(issue)],
      ["count", number(issue.count)],
      ["first seen", `${TS.time(issue.first_seen)} UTC`],
      ["last seen", `${TS.time(issue.last_seen)} UTC`],
      ["services", issue.services.join(", ") || issue.service],
      ["instances", instances(issue)],
    ];
    return TS.el("table", { class: "kv issue-facts" }, TS.el("tbody", {},
      ...values.map(([key, value]) => TS.el("tr", {}, TS.el("th", {}, key), TS.el("td", {}, value)))));
  }

  // The first 50 instances an issue met, by name; from then on its records are counted together.
  function instances(issue) {
    const named = issue.instances.join(", ");
    if (!issue.other_instances) return named;
    return `${named}, and ${number(issue.other_instances)} records since those (not counted by instance)`;
  }

  // A route's recent traces in the trace list; `beat:<entry>` and task names have no route to list.
  function routeCell(route) {
    if (!route.startsWith("/")) return TS.el("td", { class: "route" }, route);
    return TS.el("td", { class: "route" },
      TS.el("a", { href: "trace?" + new URLSearchParams({ name: route }), title: "recent traces of this route" }, route));
  }

  function chain(issue) {
    if (!issue.chain.length) return [TS.el("div", { class: "empty" }, "No route or schedule entry recorded for these errors.")];
    return [TS.el("table", { class: "issue-chain" },
      TS.el("thead", {}, TS.el("tr", {}, TS.el("th", {}, "route or schedule entry"), TS.el("th", {}, "errors"))),
      TS.el("tbody", {}, ...issue.chain.map((link) =>
        TS.el("tr", { class: "chain-link" }, routeCell(link.route), TS.el("td", { class: "num" }, number(link.count))))))];
  }

  function samples(issue) {
    const found = issue.sample_trace_ids.length ? issue.sample_trace_ids : [issue.trace_id].filter(Boolean);
    if (!found.length) return [TS.el("div", { class: "empty" }, "These errors were written outside any trace.")];
    return [TS.el("ul", { class: "samples" }, ...found.map((traceId) => TS.el("li", {},
      TS.el("a", { href: TS.traceHref(traceId), class: "sample-trace" }, traceId),
      traceId === issue.trace_id ? " (newest)" : "")))];
  }

  function newest(record) {
    if (!record) return [TS.el("div", { class: "empty" }, "Its newest record has been trimmed from the stream.")];
    const parts = [TS.el("table", { class: "newest" }, TS.el("tbody", { id: "records" }, TS.recordRow(record)))];
    if (record.exception_type) {
      parts.push(TS.el("div", { class: "exception" }, `${record.exception_type}: ${record.exception_message}`));
    }
    if (record.exception_stacktrace) parts.push(...TS.detail.stackTrace(record.exception_stacktrace));
    return parts;
  }

  function showIssue(found) {
    const issue = found.issue;
    single.replaceChildren(
      TS.el("p", {}, TS.el("a", { href: "errors" }, "← all issues")),
      TS.el("h2", { class: "issue-title" }, errorText(issue)),
      facts(issue),
      TS.el("h2", {}, "Last 24 hours"), sparkline(issue.hourly, 480, 60),
      TS.el("h2", {}, "Causal chain"), ...chain(issue),
      TS.el("h2", {}, "Sample traces"), ...samples(issue),
      TS.el("h2", {}, "Newest record"), ...newest(found.newest_record));
    document.title = `${TS.shown(errorText(issue).slice(0, 60))} · Errors · tracestream`;
  }

  function showList(issues) {
    rows.replaceChildren(...issues.map(issueRow));
    if (!issues.length) {
      rows.append(TS.el("tr", {}, TS.el("td", { class: "empty", colspan: "8" }, "No error issues match these filters.")));
    }
  }

  const load = () => TS.withStatus(status, async () => {
    const fingerprint = new URLSearchParams(location.search).get("fingerprint");
    list.hidden = Boolean(fingerprint);
    single.hidden = !fingerprint;
    try {
      if (fingerprint) showIssue(await TS.getJSON("api/errors/" + encodeURIComponent(fingerprint)));
      else showList((await TS.getJSON("api/errors", TS.formParams(form))).issues);
    } catch (error) {
      TS.showError(fingerprint ? single : rows, error);
      throw error;
    }
  });

  TS.bindForm(form, load);
  load();
})();
