// Switchyard console: live move progress over Server-Sent Events (the
// browser's EventSource), no library. Pages work without it; it only keeps
// the figures current without a reload.
(function () {
  "use strict";
  function text(id, v) {
    var el = document.getElementById(id);
    if (el) { el.textContent = v; }
  }
  function badge(id, v) {
    var el = document.getElementById(id);
    if (el) { el.textContent = v; el.className = "badge " + v; }
  }
  function num(n) { return Number(n || 0).toLocaleString("en-US"); }

  function renderTables(tables) {
    var body = document.getElementById("move-tables");
    if (!body || !tables) { return; }
    var rows = [];
    tables.forEach(function (t) {
      var tr = document.createElement("tr");
      [t.table, num(t.rows), num(t.total_rows), num(Math.round(t.rows_per_s)), t.done ? "yes" : "no"].forEach(function (v, i) {
        var td = document.createElement("td");
        if (i > 0 && i < 4) { td.className = "num"; }
        td.textContent = v;
        tr.appendChild(td);
      });
      rows.push(tr);
    });
    body.replaceChildren.apply(body, rows);
  }

  // toggleActions hides the abort and retry buttons once the move's
  // state no longer allows them (as the server decides when it renders).
  function toggleActions(m) {
    var abort = document.getElementById("abort"), retry = document.getElementById("retry");
    if (abort) { abort.form.hidden = m.status === "done" || m.status === "aborted" || m.phase === "retained"; }
    if (retry) { retry.form.hidden = m.status !== "paused"; }
  }

  function applyMove(m) {
    toggleActions(m);
    badge("move-phase", m.phase);
    badge("move-status", m.status);
    text("move-progress", m.progress);
    text("move-backlog", num(m.backlog));
    text("move-rates", m.rates);
    text("move-eta", m.eta || "—");
    text("move-message", m.message || "");
    text("move-pause", m.pause || "—");
    text("move-error", m.error || "");
    text("move-updated", m.updated);
    renderTables(m.tables);
    var live = document.getElementById("move-live");
    if (live) { live.textContent = "live · " + m.updated; }
  }

  function applyList(list) {
    list.forEach(function (m) {
      var tr = document.querySelector('tr[data-move="' + m.id + '"]');
      if (!tr) { return; }
      var set = function (cls, v, asBadge) {
        var el = tr.querySelector("." + cls);
        if (!el) { return; }
        el.textContent = v;
        if (asBadge) { el.className = cls + " badge " + v; }
      };
      set("phase", m.phase, true);
      set("status", m.status, true);
      set("progress", m.progress);
      set("backlog", num(m.backlog));
      set("eta", m.eta || "—");
      set("pause", m.pause || "—");
    });
  }

  // applyJob shows a backup job's progress (the tenant page).
  function applyJob(j) {
    var p = j.progress || {};
    badge("job-state", j.state);
    text("job-step", (p.phase || "") + " " + (p.table || ""));
    text("job-rows", num(p.rows_done) + " of " + num(p.rows_total));
    text("job-backup", j.backup || "");
    text("job-error", j.error || "");
  }

  // refreshBackups re-reads the tenant page's backups table once a job
  // has ended, so the new backup is listed without a reload.
  function refreshBackups() {
    var body = document.querySelector("#tenant-backups tbody");
    if (!body) { return; }
    fetch(location.href, {headers: {Accept: "text/html"}}).then(function (r) { return r.text(); }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("#tenant-backups tbody");
      if (fresh) { body.replaceWith(fresh); }
    });
  }

  function follow(url, onData, onEnd) {
    var es = new EventSource(url);
    ["move", "moves", "job"].forEach(function (ev) {
      es.addEventListener(ev, function (e) { onData(JSON.parse(e.data)); });
    });
    es.addEventListener("end", function () { es.close(); if (onEnd) { onEnd(); } });
    return es;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.body.getAttribute("data-stream");
    if (!page) { return; }
    if (document.getElementById("job-state")) {
      follow(page, applyJob, refreshBackups);
    } else if (document.getElementById("move-phase")) {
      follow(page, applyMove);
    } else {
      follow(page, applyList);
    }
  });
})();
