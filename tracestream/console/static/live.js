// Live tail over server-sent events. Filters run on the server; pausing closes the stream and
// resuming reopens it after the last record shown, so the server replays what was missed.
"use strict";

(() => {
  const MAX_ROWS = 2000;
  const form = document.getElementById("filters");
  const rows = document.getElementById("records");
  const status = document.getElementById("status");
  const pauseButton = document.getElementById("pause");
  let source = null;
  let lastId = null;
  let paused = false;
  let retry = null;

  const setStatus = (text, kind) => TS.setStatus(status, text, kind);

  function connect() {
    const params = TS.formParams(form);
    if (lastId) params.set("after", lastId);
    source = new EventSource("api/live?" + params);
    source.onopen = () => setStatus("live", "live");
    source.onmessage = (event) => {
      lastId = event.lastEventId;
      TS.insertByTime(rows, TS.recordRow(JSON.parse(event.data)));
      while (rows.childElementCount > MAX_ROWS) rows.lastElementChild.remove();
    };
    // The server stays connected through a Redis outage and says so, then resumes.
    source.addEventListener("status", (event) => {
      const state = JSON.parse(event.data);
      setStatus(state.message, state.redis === "ok" ? "live" : "error");
    });
    source.onerror = () => {
      setStatus("reconnecting…", "error");
      if (source.readyState === EventSource.CLOSED) {  // the browser gave up: find out why
        source = null;
        reconnectUnlessSignedOut();
      }
    };
  }

  // An EventSource cannot see the status that refused it. A small request can: a 401 or 403 (or a
  // redirect, to a host app's login page) means the sign-in is no longer valid, and retrying
  // cannot help; anything else (the console restarting, a network error) is retried after 1 s.
  async function reconnectUnlessSignedOut() {
    try {
      const response = await fetch("static/live.js",
        { method: "HEAD", cache: "no-store", credentials: "same-origin" });
      if (response.status === 401 || response.status === 403 || response.redirected) {
        setStatus("signed out: the sign-in is no longer valid; reload the page to sign in again", "error");
        return;
      }
    } catch {
      // unreachable for now: retried below
    }
    if (!paused && !source) retry = setTimeout(connect, 1000);
  }

  function disconnect() {
    clearTimeout(retry);
    if (source) source.close();
    source = null;
  }

  TS.bindForm(form, () => {
    disconnect();
    rows.replaceChildren();
    lastId = null;
    if (!paused) connect();
  });

  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    if (paused) {
      disconnect();
      setStatus("paused");
    } else {
      connect();
    }
  });

  connect();
})();
