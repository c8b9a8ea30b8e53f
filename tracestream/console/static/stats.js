// Stats: records per minute by severity as a stacked bar chart (SVG built with DOM APIs), with
// each severity's total (`~1,200` when sampled-down records went into it: an estimate), and the
// most frequent error groups with the services they came from, each linking to its error issue
// (or to the issues of its one service, or to every issue when it came from several).
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const COLOURS = { TRACE: "#5c6773", DEBUG: "#8a96a3", INFO: "#7ee787", WARN: "#e3b341", ERROR: "#ff7b72", FATAL: "#ff4d9d" };
  const form = document.getElementById("filters");
  const chart = document.getElementById("chart");
  const head = document.getElementById("groups-head");
  const groups = document.getElementById("groups");
  const status = document.getElementById("status");
  const ESTIMATE = "estimated: records of sampled traces count for their sample weight (docs/sampling.md)";
  // `1,200`, or `~1,200` for an estimate, as `tracestream stats` prints it.
  const shownCount = (count, estimated) => (estimated ? "~" : "") + Math.round(count).toLocaleString("en-US");
  const link = (path, params, text, className, title) =>
    TS.el("a", { href: path + "?" + new URLSearchParams(params), class: className, ...(title && { title }) }, text);
  const SHOWN_SERVICES = 2; // the rest as `+3 more`, named in its title: a group may span every service

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    for (const child of children) node.append(child);
    return node;
  }

  function drawChart(minutes) {
    if (!minutes.length) {
      chart.replaceChildren(TS.el("div", { class: "empty" }, "No records in this window."));
      return;
    }
    const width = 1200, height = 220, pad = 30;
    const totals = minutes.map((m) => Object.values(m.counts).reduce((a, b) => a + b, 0));
    const max = Math.max(1, ...totals);
    const step = (width - pad) / minutes.length;
    const root = svg("svg", { viewBox: `0 0 ${width} ${height + 20}`, class: "chart", role: "img" });
    const scaleEstimated = minutes.some((minute) => minute.estimated.length);
    root.append(svg("text", { x: 0, y: 12, fill: "#8a96a3", "font-size": 11 }, shownCount(max, scaleEstimated)));
    minutes.forEach((minute, i) => {
      let y = height;
      for (const severity of Object.keys(COLOURS)) {
        const count = minute.counts[severity] || 0;
        if (!count) continue;
        const h = (count / max) * (height - 20);
        y -= h;
        const shown = shownCount(count, minute.estimated.includes(severity));
        root.append(svg("rect", { x: pad + i * step, y, width: Math.max(1, step - 1), height: h, fill: COLOURS[severity] },
          svg("title", {}, `${minute.minute} UTC ${severity}: ${shown}`)));
      }
    });
    root.append(svg("text", { x: pad, y: height + 16, fill: "#8a96a3", "font-size": 11 }, `${minutes[0].minute} UTC`),
      svg("text", { x: width - 40, y: height + 16, fill: "#8a96a3", "font-size": 11 }, minutes[minutes.length - 1].minute));
    const legend = TS.el("div", { class: "legend" },
      ...Object.entries(COLOURS).map(([name, colour]) => {
        const total = minutes.reduce((sum, minute) => sum + (minute.counts[name] || 0), 0);
        const estimated = minutes.some((minute) => minute.estimated.includes(name));
        const figure = estimated ? TS.el("abbr", { class: "estimated", title: ESTIMATE }, shownCount(total, true))
          : shownCount(total, false);
        const item = TS.el("span", { class: "severity-total", "data-severity": name }, "■ " + name + " ", figure);
        item.style.color = colour;
        return item;
      }));
    chart.replaceChildren(root, legend);
  }

  // Each service links to its records; a count per service is in the link's title.
  function servicesCell(services) {
    const cell = TS.el("td", { class: "service" });
    services.slice(0, SHOWN_SERVICES).forEach(({ service, count }, i) =>
      cell.append(i ? ", " : "", link("search", { service }, service, "to-search", `${count} errors`)));
    const rest = services.slice(SHOWN_SERVICES);
    if (rest.length) {
      cell.append(TS.el("span", { class: "more", title: rest.map(({ service, count }) => `${service} (${count})`).join(", ") },
        ` +${rest.length} more`));
    }
    return cell;
  }

  function issueLink(group) {
    if (group.fingerprint) return link("errors", { fingerprint: group.fingerprint }, group.error, "to-issue");
    const only = group.services.length === 1 ? { service: group.services[0].service } : {};
    return link("errors", only, group.error, "to-errors");
  }

  function drawGroups(top) {
    head.replaceChildren(TS.el("tr", {}, ...["count", "services", "error", "where", "last seen (UTC)"]
      .map((name) => TS.el("th", {}, name))));
    groups.replaceChildren(...top.map((group) => TS.el("tr", { class: "error-group" },
      TS.el("td", { class: "num" }, group.count),
      servicesCell(group.services),
      TS.el("td", { class: "body" }, issueLink(group)),
      TS.el("td", { class: "attrs" }, group.code),
      TS.el("td", { class: "time" }, TS.time(group.last_seen)))));
    if (!top.length) groups.append(TS.el("tr", {}, TS.el("td", { class: "empty" }, "No errors in this window.")));
  }

  const load = () => TS.withStatus(status, async () => {
    const stats = await TS.getJSON("api/stats", TS.formParams(form));
    drawChart(stats.minutes);
    drawGroups(stats.top_errors);
  });

  TS.bindForm(form, load);
  load();
})();
