// Search: every filter of the query API, newest first, one page at a time. The cursor of
// each page is the stream id of its last record, so "Older" continues exactly there.
"use strict";

(() => {
  const form = document.getElementById("filters");
  const rows = document.getElementById("records");
  const status = document.getElementById("status");
  const info = document.getElementById("page-info");
  const older = document.getElementById("older");
  const first = document.getElementById("first");
  let cursors = [];  // the cursor that produced each page shown so far
  let next = null;

  function load(cursor) {
    const params = TS.formParams(form);
    if (cursor) params.set("cursor", cursor);
    return TS.withStatus(status, async () => {
      const page = await TS.getJSON("api/search", params);
      rows.replaceChildren(...page.records.slice().sort(TS.newerFirst).map(TS.recordRow));
      if (!page.records.length) {
        rows.append(TS.el("tr", {}, TS.el("td", { class: "empty", colspan: "5" }, "No matching records.")));
      }
      next = page.next_cursor;
      older.disabled = !next;
      first.disabled = cursors.length === 0;
      info.textContent = `page ${cursors.length + 1}, ${page.records.length} records`;
    });
  }

  const restart = () => {
    cursors = [];
    load(null);
  };
  older.addEventListener("click", () => {
    cursors.push(next);
    load(next);
  });
  first.addEventListener("click", restart);
  TS.bindForm(form, restart);
  restart();
})();
