// ProcessMonitor dashboard. Hand-written, no dependencies. Every value from the API reaches the page as text
// (textContent, text nodes, attribute values), never as markup. The token lives in sessionStorage only and goes
// out in the Authorization header, never in a URL. Streams are read with fetch() so they can carry that header.
"use strict";

(function () {
  const TOKEN_KEY = "pm-token";
  const POLL_MS = 2000; // status and resource samples: never faster than once a second
  const RECONNECT_MS = [1000, 2000, 5000];
  const SAMPLES = 90; // sparkline: the last three minutes at one sample per POLL_MS
  const LOG_LINES = 3000;
  const TIMELINE = 200;
  const RESUME_LINES = 50; // lines kept to line a followed log's reconnection up
  const RESUME_TAIL = 1000; // lines asked for again on a reconnection
  const $ = (id) => document.getElementById(id);

  const app = {
    token: sessionStorage.getItem(TOKEN_KEY),
    caps: { operate: true, admin: true },
    procs: new Map(), // id -> ProcessStatus
    samples: new Map(), // id -> {cpu: [], mem: []}
    events: new Map(), // id -> [event]
    activity: [],
    view: null,
    started: false,
    monitor: null,
  };

  // ---------- DOM helpers (text only) ----------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "onclick") node.addEventListener("click", value);
      else if (key.startsWith("on")) throw new Error("no inline handlers");
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
    }
    return node;
  }
  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }
  function toast(message, ok) {
    const box = $("toast");
    box.textContent = message;
    box.classList.toggle("ok", !!ok);
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (box.hidden = true), ok ? 2500 : 6000);
  }

  // ---------- formatting ----------
  function duration(secs) {
    if (secs === undefined || secs === null) return "";
    secs = Math.floor(secs);
    const d = Math.floor(secs / 86400), h = Math.floor((secs % 86400) / 3600), m = Math.floor((secs % 3600) / 60);
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + (secs % 60) + "s";
    return secs + "s";
  }
  function bytes(n) {
    if (n === undefined || n === null) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }
  function clock(time) {
    const date = new Date(time);
    return isNaN(date) ? String(time || "") : date.toLocaleTimeString();
  }
  function describe(ev) {
    switch (ev.type) {
      case "state": {
        let text = ev.from + " \u2192 " + ev.to;
        if (ev.reason) text += " (" + ev.reason + ")";
        if (ev.pid) text += " pid " + ev.pid;
        return text;
      }
      case "restartScheduled": return "restart " + ev.attempt + " in " + ev.delayMs + " ms";
      case "checkFailed": return "check failed (" + ev.consecutiveFailures + " in a row)";
      case "checkPassed": return "check passed";
      case "configChanged": return "configuration changed: " + (ev.fields || []).join(", ");
      case "partnerUp": return "partner " + ev.partnerInstanceId + " up";
      case "partnerDown": return "partner " + ev.partnerInstanceId + " down: " + ev.reason;
      case "standaloneChanged": return "standalone " + (ev.enabled ? "on" : "off");
      default: return ev.type;
    }
  }

  // ---------- API ----------
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (app.token) h["Authorization"] = "Bearer " + app.token;
    return h;
  }
  async function api(method, path, body) {
    const init = { method, headers: headers(), cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (err) {
      setConn(false);
      return { status: 0, data: { error: "Monitor not reachable" } };
    }
    let data = null;
    try { data = await res.json(); } catch (_) { data = null; }
    if (res.status === 401 && app.started) logout("The token was refused (expired or revoked). Sign in again.");
    return { status: res.status, data: data || {} };
  }
  function errorText(res) {
    return (res.data && res.data.error) || ("HTTP " + res.status);
  }

  // A stream read with fetch: onChunk gets decoded text; resolves when the stream ends, rejects on failure.
  async function readStream(path, extraHeaders, signal, onOpen, onChunk) {
    const res = await fetch(path, { headers: headers(extraHeaders), signal, cache: "no-store", credentials: "omit" });
    if (!res.ok) {
      let message = "HTTP " + res.status;
      try { message = (await res.json()).error || message; } catch (_) { /* not JSON */ }
      const err = new Error(message);
      err.status = res.status;
      throw err;
    }
    onOpen(res);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      onChunk(decoder.decode(value, { stream: true }), value.length);
    }
  }

  // ---------- the event stream ----------
  const stream = { controller: null, lastId: null, failures: 0 };
  function setConn(live, text) {
    const conn = $("conn");
    conn.textContent = text || (live ? "live" : "disconnected \u2014 reconnecting");
    conn.classList.toggle("live", !!live);
    conn.classList.toggle("down", !live);
  }
  async function runEvents() {
    while (app.started) {
      const controller = new AbortController();
      stream.controller = controller;
      let buffer = "";
      try {
        // Replay what the monitor still holds (an unknown id answers a gap, then every event held), so the
        // timelines have history; afterwards resume from the last id seen.
        const extra = { "Last-Event-ID": stream.lastId || "0-0" };
        await readStream("/events", extra, controller.signal, () => {
          stream.failures = 0;
          setConn(true);
          scheduleRefresh();
        }, (text) => {
          buffer += text.replace(/\r\n?/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            handleBlock(block);
          }
        });
      } catch (err) {
        if (!app.started) return;
        if (err.status === 401) { logout("The token was refused. Sign in again."); return; }
        if (err.status === 403) { setConn(false, "events refused: " + err.message); }
      }
      if (!app.started) return;
      if (!$("conn").classList.contains("down") || stream.failures === 0) setConn(false);
      const delay = RECONNECT_MS[Math.min(stream.failures, RECONNECT_MS.length - 1)];
      stream.failures++;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
  function handleBlock(block) {
    let id = null, data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") id = value;
      else if (field === "data") data += (data ? "\n" : "") + value;
    }
    if (id) stream.lastId = id;
    if (!data) return;
    let ev;
    try { ev = JSON.parse(data); } catch (_) { return; }
    onEvent(ev);
  }
  function onEvent(ev) {
    if (ev.type === "gap") return;
    if (ev.type === "cut" || ev.type === "monitorRestart") {
      scheduleRefresh();
      return;
    }
    if (ev.processId) {
      const list = app.events.get(ev.processId) || [];
      list.push(ev);
      if (list.length > TIMELINE) list.shift();
      app.events.set(ev.processId, list);
    }
    app.activity.push(ev);
    if (app.activity.length > 50) app.activity.shift();
    if (ev.type === "state" && app.procs.has(ev.processId)) {
      const status = app.procs.get(ev.processId);
      status.state = ev.to;
      if (["starting", "running", "stopping"].includes(ev.to) && ev.pid) status.pid = ev.pid;
      if (!["starting", "running", "stopping"].includes(ev.to)) delete status.pid;
      updateRow(status);
    }
    if (ev.type === "registered" || ev.type === "deregistered" || ev.type === "configChanged") scheduleRefresh();
    else if (ev.type === "state") scheduleRefresh(1000);
    renderActivity(ev);
    if (app.view === "process" && ev.processId === app.current) {
      renderProcessHeader();
      appendTimeline($("proc-events"), ev, false);
      if (ev.type === "configChanged") loadConfig(ev.processId);
    }
    if (app.view === "monitor" && ev.type.startsWith("partner")) loadMonitor();
  }

  // ---------- polling (status, resources) ----------
  let refreshTimer = null, lastRefresh = 0;
  function scheduleRefresh(delay) {
    if (refreshTimer) return;
    const wait = Math.max(delay || 150, lastRefresh + 1000 - Date.now());
    refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, wait);
  }
  async function refresh() {
    lastRefresh = Date.now();
    const res = await api("GET", "/processes");
    if (res.status !== 200) return;
    const seen = new Set();
    for (const status of res.data.processes || []) {
      seen.add(status.id);
      app.procs.set(status.id, status);
    }
    for (const id of [...app.procs.keys()]) if (!seen.has(id)) { app.procs.delete(id); app.samples.delete(id); }
    renderList();
    if (app.view === "process") renderProcessHeader();
  }
  function sample() {
    for (const status of app.procs.values()) {
      const s = app.samples.get(status.id) || { cpu: [], mem: [] };
      s.cpu.push(status.cpuPercent === undefined ? null : status.cpuPercent);
      s.mem.push(status.memoryBytes === undefined ? null : status.memoryBytes);
      if (s.cpu.length > SAMPLES) { s.cpu.shift(); s.mem.shift(); }
      app.samples.set(status.id, s);
    }
  }
  async function poll() {
    while (app.started) {
      if (document.visibilityState === "visible") {
        // An event may have caused a read just now: the list is never read more often than once a second.
        if (Date.now() - lastRefresh >= 1000) await refresh();
        sample();
        renderList();
        if (app.view === "monitor") loadMonitor();
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  // ---------- the process list ----------
  const rows = new Map(); // id -> {tr, cells}
  function spark(values, label) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", "64");
    svg.setAttribute("height", "18");
    svg.setAttribute("viewBox", "0 0 64 18");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
    const points = values.map((v, i) => [i, v]).filter(([, v]) => v !== null);
    if (points.length > 1) {
      const max = Math.max(...points.map(([, v]) => v)) || 1;
      // The samples so far span the width (three minutes once the history is full).
      const step = 63 / Math.max(values.length - 1, 1);
      const offset = 0.5;
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("points", points.map(([i, v]) => (offset + i * step).toFixed(1) + "," + (16 - (v / max) * 14).toFixed(1)).join(" "));
      svg.append(line);
    }
    return svg;
  }
  function stateBadge(state) {
    return el("span", { class: "state " + state, text: state });
  }
  function actionButtons(status, compact) {
    const box = el("div", { class: "actions", role: "group", "aria-label": "Actions for " + status.id });
    if (!app.caps.operate) return box;
    const running = ["starting", "running", "retrying"].includes(status.state);
    const add = (label, action, opts) => {
      const button = el("button", {
        type: "button", class: (opts && opts.danger) ? "danger" : null, text: label,
        "aria-label": label + " " + status.id, "data-action": action,
      });
      button.addEventListener("click", () => perform(status.id, action, button));
      box.append(button);
    };
    if (!running && status.enabled) add("Start", "start");
    if (running || status.state === "stopping") add("Stop", "stop", { danger: true });
    if (status.enabled) add("Restart", "restart");
    if (!compact) {
      add(status.enabled ? "Disable" : "Enable", status.enabled ? "disable" : "enable");
      add(status.autostart ? "Autostart off" : "Autostart on", status.autostart ? "autostart-off" : "autostart-on");
      if (app.caps.admin) add("Deregister", "deregister", { danger: true });
    }
    return box;
  }
  function rowFor(status) {
    let row = rows.get(status.id);
    if (row) return row;
    const tr = el("tr", { "data-id": status.id });
    const cells = {};
    for (const key of ["name", "state", "pid", "uptime", "restarts", "cpu", "mem", "error", "actions"]) {
      cells[key] = el("td");
      tr.append(cells[key]);
    }
    for (const key of ["pid", "uptime", "restarts", "cpu", "mem"]) cells[key].className = "num opt";
    cells.error.className = "opt2";
    cells.state.className = "state-cell";
    row = { tr, cells, key: "" };
    rows.set(status.id, row);
    return row;
  }
  function updateRow(status) {
    const row = rowFor(status);
    const c = row.cells;
    // Cells are rebuilt only when what they show changed: a link or button keeps its focus across updates.
    if (row.name !== status.name) {
      row.name = status.name;
      clear(c.name);
      c.name.append(el("a", { class: "proc-link", href: "#/p/" + encodeURIComponent(status.id), text: status.name || status.id }));
      if (status.name && status.name !== status.id) c.name.append(el("span", { class: "sub", text: status.id }));
    }
    if (row.state !== status.state) {
      row.state = status.state;
      clear(c.state);
      c.state.append(stateBadge(status.state));
    }
    c.pid.textContent = status.pid || "";
    c.uptime.textContent = status.uptime !== undefined ? duration(status.uptime) : "";
    c.restarts.textContent = String(status.restartsTotal !== undefined ? status.restartsTotal : status.restartAttempts || 0);
    const s = app.samples.get(status.id) || { cpu: [], mem: [] };
    clear(c.cpu);
    c.cpu.append(status.cpuPercent !== undefined ? status.cpuPercent.toFixed(1) + " %" : "");
    c.cpu.append(spark(s.cpu, "CPU of " + status.id + ", recent samples"));
    clear(c.mem);
    c.mem.append(bytes(status.memoryBytes));
    c.mem.append(spark(s.mem, "Memory of " + status.id + ", recent samples"));
    clear(c.error);
    if (status.lastError) c.error.append(el("span", { class: "err", text: status.lastError }));
    // Buttons depend on state and flags only: rebuild them when those change (keeps focus otherwise).
    const key = [status.state, status.enabled, status.autostart, app.caps.operate, app.caps.admin].join("/");
    if (key !== row.key) {
      row.key = key;
      clear(c.actions);
      c.actions.append(actionButtons(status, true));
    }
  }
  function renderList() {
    const body = $("procs-body");
    const ids = [...app.procs.keys()].sort();
    for (const [id, row] of rows) if (!app.procs.has(id)) { row.tr.remove(); rows.delete(id); }
    ids.forEach((id, index) => {
      const status = app.procs.get(id);
      updateRow(status);
      const tr = rows.get(id).tr;
      if (body.children[index] !== tr) body.insertBefore(tr, body.children[index] || null);
    });
    $("empty").hidden = ids.length > 0;
    const running = ids.filter((id) => app.procs.get(id).state === "running").length;
    $("counts").textContent = ids.length + " processes, " + running + " running";
  }
  function appendTimeline(list, ev, withProcess) {
    const item = el("li", {}, el("time", { datetime: ev.time, text: clock(ev.time) }));
    if (withProcess && ev.processId) item.append(el("strong", { text: ev.processId }), " ");
    item.append(describe(ev));
    if (ev.type === "state") item.setAttribute("data-to", ev.to);
    list.prepend(item);
    while (list.children.length > TIMELINE) list.lastChild.remove();
  }
  function renderActivity(ev) {
    const list = $("activity");
    appendTimeline(list, ev, true);
    while (list.children.length > 50) list.lastChild.remove();
  }

  // ---------- actions ----------
  function confirmDialog(text) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }
  async function perform(id, action, button) {
    if (action === "stop" && !(await confirmDialog("Stop " + id + "?"))) return;
    if (action === "deregister" && !(await confirmDialog("Deregister " + id + "? It is stopped and removed."))) return;
    if (button) button.disabled = true;
    const path = "/processes/" + encodeURIComponent(id);
    let res;
    if (action === "deregister") res = await api("DELETE", path);
    else if (action === "autostart-on" || action === "autostart-off") {
      res = await api("PUT", path + "/autostart", { autostart: action === "autostart-on" });
    } else res = await api("POST", path + "/" + action);
    if (button) button.disabled = false;
    if (res.status === 200) {
      toast(id + ": " + action + " done", true);
      if (action === "deregister" && app.view === "process") location.hash = "#/";
    } else {
      toast(id + ": " + action + " failed: " + errorText(res));
    }
    refresh();
  }

  // ---------- the process page ----------
  const logState = { controller: null, key: "" };
  function field(dl, name, value) {
    if (value === undefined || value === null || value === "") return;
    dl.append(el("dt", { text: name }), el("dd", { text: String(value) }));
  }
  function renderProcessHeader() {
    const status = app.procs.get(app.current);
    $("proc-title").textContent = status ? (status.name || status.id) : app.current;
    const stateBox = $("proc-state");
    stateBox.className = "state " + (status ? status.state : "");
    stateBox.textContent = status ? status.state : "not registered";
    const actions = $("proc-actions");
    // The id is part of the key: another process in the same state must not keep the buttons of the last one.
    const key = status ? [status.id, status.state, status.enabled, status.autostart, app.caps.operate, app.caps.admin].join("/") : "";
    if (actions.dataset.key !== key) {
      actions.dataset.key = key;
      clear(actions);
      if (status) actions.append(...actionButtons(status, false).childNodes);
    }
    const dl = $("proc-fields");
    clear(dl);
    if (!status) return;
    field(dl, "Id", status.id);
    field(dl, "Name", status.name);
    field(dl, "Command", status.command);
    field(dl, "Enabled", status.enabled ? "yes" : "no");
    field(dl, "Autostart", status.autostart ? "yes" : "no");
    field(dl, "Registered", status.isRemote ? "through the API" : "locally");
    field(dl, "Stop timeout", status.stopTimeoutMs !== undefined ? status.stopTimeoutMs + " ms" : "");
    field(dl, "PID", status.pid);
    field(dl, "Uptime", status.uptime !== undefined ? duration(status.uptime) : "");
    field(dl, "Restart attempts", status.restartAttempts);
    field(dl, "Restarts in total", status.restartsTotal);
    field(dl, "CPU", status.cpuPercent !== undefined ? status.cpuPercent.toFixed(1) + " %" : "");
    field(dl, "Memory", bytes(status.memoryBytes));
    field(dl, "Last started", status.lastStartedAt);
    field(dl, "Last stopped", status.lastStoppedAt);
    field(dl, "Last exit code", status.lastExitCode);
    field(dl, "Last signal", status.lastSignal);
    field(dl, "Last error", status.lastError);
    field(dl, "Check failures", status.checkFailuresTotal);
  }
  // The whole ProcessConfig (GET /processes/{id}/config), key by key in the API's own names; nested values as JSON.
  async function loadConfig(id) {
    const dl = $("proc-config");
    const res = await api("GET", "/processes/" + encodeURIComponent(id) + "/config");
    if (app.current !== id) return;
    clear(dl);
    if (res.status !== 200) { dl.append(el("dd", { class: "error", text: errorText(res) })); return; }
    for (const [key, value] of Object.entries(res.data)) {
      const text = value !== null && typeof value === "object" ? JSON.stringify(value) : String(value);
      const dd = el("dd", { "data-key": key });
      dd.append(typeof value === "object" && value !== null ? el("code", { text }) : document.createTextNode(text));
      dl.append(el("dt", { text: key }), dd);
    }
  }
  async function showProcess(id) {
    app.current = id;
    renderProcessHeader();
    clear($("proc-config"));
    loadConfig(id);
    const list = $("proc-events");
    clear(list);
    for (const ev of app.events.get(id) || []) appendTimeline(list, ev, false);
    const runs = await api("GET", "/processes/" + encodeURIComponent(id) + "/runs");
    const select = $("log-run");
    clear(select);
    select.append(el("option", { value: "", text: "newest" }));
    if (runs.status === 200) {
      for (const run of (runs.data.runs || []).slice().reverse()) {
        select.append(el("option", { value: run.run, text: run.run + " (" + bytes(run.stdoutBytes) + " / " + bytes(run.stderrBytes) + ")" }));
      }
    }
    openLog();
  }
  function stopLog() {
    if (logState.controller) logState.controller.abort();
    logState.controller = null;
  }
  async function openLog() {
    stopLog();
    const id = app.current;
    const controller = new AbortController();
    logState.controller = controller;
    const pre = $("log");
    const status = $("log-status");
    clear(pre);
    const params = new URLSearchParams({ stream: $("log-stream").value, tail: "200" });
    if ($("log-follow").checked) params.set("follow", "true");
    if ($("log-run").value) params.set("run", $("log-run").value);
    const follow = $("log-follow").checked;
    let lines = 0;
    const append = (text) => {
      const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
      pre.append(document.createTextNode(text));
      lines += (text.match(/\n/g) || []).length;
      if (lines > LOG_LINES) {
        pre.normalize();
        const all = pre.textContent;
        const keep = all.split("\n").slice(-LOG_LINES).join("\n");
        pre.textContent = keep;
        lines = LOG_LINES;
      }
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    };
    // The last lines shown, to line a reconnection's tail up with them (X-Log-Tail-Bytes says where it ends).
    let recent = [], partial = "", resume = null;
    const show = (text) => {
      append(text);
      const parts = (partial + text).split("\n");
      partial = parts.pop();
      recent.push(...parts);
      if (recent.length > RESUME_LINES) recent = recent.slice(-RESUME_LINES);
    };
    const onOpen = (res) => {
      status.textContent = follow ? "following" : "loaded";
      const tailBytes = Number(res.headers.get("x-log-tail-bytes"));
      if (resume && res.headers.has("x-log-tail-bytes") && Number.isFinite(tailBytes)) {
        resume = { left: tailBytes, text: "" };
        partial = "";
        if (tailBytes === 0) onChunk("", 0);
      } else if (resume) {
        resume = null;
        clear(pre);
        lines = 0;
        recent = [];
      }
    };
    const onChunk = (text, bytes) => {
      if (!resume) { show(text); return; }
      resume.text += text;
      resume.left -= bytes;
      if (resume.left > 0) return;
      const tail = resume.text.split("\n");
      const rest = tail.pop();
      let skip = lineUp(tail, recent);
      if (skip === null) {
        show("\u2014 reconnected; lines written meanwhile may be missing \u2014\n");
        skip = 0;
      }
      resume = null;
      show(tail.slice(skip).map((line) => line + "\n").join("") + rest);
    };
    for (;;) {
      status.textContent = "connecting";
      try {
        await readStream("/processes/" + encodeURIComponent(id) + "/logs?" + params, {}, controller.signal,
          onOpen, onChunk);
        if (!follow) { status.textContent = "end of log"; return; }
        status.textContent = "log stream ended \u2014 reconnecting";
      } catch (err) {
        if (controller.signal.aborted) return;
        if (err.status === 404) { status.textContent = err.message; if (!follow) return; }
        else if (err.status === 401) { logout("The token was refused. Sign in again."); return; }
        else status.textContent = "disconnected (" + err.message + ") \u2014 reconnecting";
      }
      if (controller.signal.aborted || app.current !== id) return;
      await new Promise((resolve) => setTimeout(resolve, 2000));
      if (controller.signal.aborted) return;
      // Go on where the page stood: the newest run's last lines, skipped up to those already shown.
      params.delete("run");
      params.set("tail", String(RESUME_TAIL));
      resume = recent.length ? {} : null;
      if (!resume) { clear(pre); lines = 0; }
    }
  }
  // How many lines of `tail` were shown already: the end of the last place where it holds the last lines shown
  // (all of them, or as many as precede that place near its start); null when there is none.
  function lineUp(tail, recent) {
    const m = recent.length;
    if (m === 0) return 0;
    for (let p = tail.length; p >= 1; p--) {
      const k = Math.min(m, p);
      let same = true;
      for (let i = 0; i < k && same; i++) same = tail[p - k + i] === recent[m - k + i];
      if (same) return p;
    }
    return null;
  }

  // ---------- monitor panel ----------
  async function loadMonitor() {
    const res = await api("GET", "/monitor/status");
    if (res.status !== 200) return;
    const m = res.data;
    app.monitor = m;
    $("instance").textContent = "instance " + m.instanceId + (m.version ? " \u00b7 v" + m.version : "");
    const dl = $("mon-fields");
    clear(dl);
    field(dl, "Instance", m.instanceId);
    field(dl, "Version", m.version);
    field(dl, "State", m.state);
    field(dl, "PID", m.pid);
    field(dl, "Started", m.startedAt);
    field(dl, "Uptime", duration(m.uptime));
    field(dl, "Standalone", m.standaloneMode ? "yes" : "no");
    field(dl, "Partner", m.partnerInstanceId);
    field(dl, "Partner status", m.partnerStatus);
    field(dl, "Partner PID", m.partnerPid);
    field(dl, "Containment", m.containment ? m.containment + (m.containmentReason ? " (" + m.containmentReason + ")" : "") : "");
    field(dl, "Processes", m.managedProcessCount + " managed, " + m.runningProcessCount + " running");
    field(dl, "Aliveness port", m.alivenessPort);
    field(dl, "Remote API port", m.remotePort);
    $("mon-restart").hidden = !app.caps.admin;
  }

  // ---------- settings ----------
  const SETTINGS = [
    { item: "trusted-hosts", title: "Trusted hosts", key: "trustedHosts", list: true },
    { item: "executable-whitelist", title: "Executable whitelist", key: "patterns", list: true },
    { item: "executable-blacklist", title: "Executable blacklist", key: "patterns", list: true },
    { item: "standalone-mode", title: "Standalone mode", key: "enabled", bool: true },
    { item: "remote-access", title: "Remote access and permissions", object: true },
  ];
  async function loadSettings() {
    const box = $("settings");
    clear(box);
    $("set-note").textContent = app.caps.admin
      ? "Changes are applied at once. Changing settings also needs a trusted host."
      : "Read-only: changing settings needs an admin token.";
    for (const spec of SETTINGS) {
      const res = await api("GET", "/config/" + spec.item);
      const card = el("form", { class: "card", novalidate: true, "aria-label": spec.title });
      card.append(el("h2", { text: spec.title }));
      box.append(card);
      if (res.status !== 200) { card.append(el("p", { class: "error", text: errorText(res) })); continue; }
      const ro = !app.caps.admin;
      const inputs = {};
      const idBase = "set-" + spec.item;
      if (spec.list) {
        const area = el("textarea", { id: idBase, rows: 4, spellcheck: "false", readonly: ro, "aria-label": spec.title + ", one per line" });
        area.value = (res.data[spec.key] || []).join("\n");
        card.append(el("label", { for: idBase, class: "muted", text: "One per line" }), area);
        inputs.value = () => ({ [spec.key]: area.value.split("\n").map((s) => s.trim()).filter(Boolean) });
      } else if (spec.bool) {
        const box2 = el("input", { id: idBase, type: "checkbox", disabled: ro });
        box2.checked = !!res.data[spec.key];
        card.append(el("label", {}, box2, " " + spec.title));
        inputs.value = () => ({ [spec.key]: box2.checked });
      } else {
        const fields = {};
        for (const [key, value] of Object.entries(res.data)) {
          if (typeof value === "boolean") {
            const cb = el("input", { id: idBase + "-" + key, type: "checkbox", disabled: ro });
            cb.checked = value;
            card.append(el("div", {}, el("label", {}, cb, " " + key)));
            fields[key] = () => cb.checked;
          } else if (typeof value === "number" || typeof value === "string") {
            const input = el("input", { id: idBase + "-" + key, readonly: ro });
            input.value = String(value);
            card.append(el("div", { class: "field" }, el("label", { for: idBase + "-" + key, text: key }), input));
            fields[key] = () => (typeof value === "number" ? Number(input.value) : input.value);
          } else {
            card.append(el("div", { class: "field" }, el("span", { class: "muted", text: key + ": " }), el("code", { text: JSON.stringify(value) })));
          }
        }
        inputs.value = () => Object.fromEntries(Object.entries(fields).map(([k, f]) => [k, f()]));
      }
      const error = el("p", { class: "error", role: "alert" });
      card.append(error);
      if (!ro) {
        card.append(el("div", { class: "actions" }, el("button", { type: "submit", class: "primary", text: "Save", "aria-label": "Save " + spec.title })));
        card.addEventListener("submit", async (event) => {
          event.preventDefault();
          error.textContent = "";
          const put = await api("PUT", "/config/" + spec.item, inputs.value());
          if (put.status === 200) toast(spec.title + " saved", true);
          else error.textContent = errorText(put);
        });
      }
    }
  }

  // ---------- register ----------
  const REG_FIELDS = ["id", "name", "command", "args", "workingDirectory", "environment", "stopTimeoutMs"];
  function fieldOf(message) {
    if (/Process ID already exists|Invalid process ID/i.test(message)) return "id";
    if (/^Executable not permitted/i.test(message)) return "command";
    if (/^Environment variable/i.test(message)) return "environment";
    const named = message.match(/(?:field:?\s*`?|field `)([A-Za-z]+)/) || message.match(/`([A-Za-z]+)`/);
    if (named && REG_FIELDS.includes(named[1])) return named[1];
    for (const name of REG_FIELDS) if (new RegExp("\\b" + name + "\\b").test(message)) return name;
    return "form";
  }
  async function register(event) {
    event.preventDefault();
    for (const name of REG_FIELDS.concat(["form"])) $("err-" + name).textContent = "";
    for (const name of REG_FIELDS) $("reg-" + name) && $("reg-" + name).removeAttribute("aria-invalid");
    const value = (name) => $("reg-" + name).value;
    const body = { id: value("id").trim(), name: value("name").trim() || value("id").trim(), command: value("command").trim() };
    const args = value("args").split("\n").filter((line) => line !== "");
    if (args.length) body.args = args;
    if (value("workingDirectory").trim()) body.workingDirectory = value("workingDirectory").trim();
    const env = {};
    for (const line of value("environment").split("\n")) {
      if (!line.trim()) continue;
      const eq = line.indexOf("=");
      if (eq <= 0) {
        $("err-environment").textContent = "Each line must be NAME=value";
        return;
      }
      env[line.slice(0, eq)] = line.slice(eq + 1);
    }
    if (Object.keys(env).length) body.environment = env;
    if (value("stopTimeoutMs").trim()) {
      const ms = Number(value("stopTimeoutMs").trim());
      if (!Number.isInteger(ms) || ms < 0) { $("err-stopTimeoutMs").textContent = "A whole number of milliseconds"; return; }
      body.stopTimeoutMs = ms;
    }
    body.autostart = $("reg-autostart").checked;
    body.enabled = $("reg-enabled").checked;
    const res = await api("POST", "/processes", body);
    if (res.status === 200) {
      toast(body.id + " registered", true);
      $("reg-form").reset();
      await refresh();
      location.hash = "#/p/" + encodeURIComponent(body.id);
      return;
    }
    const message = errorText(res);
    const target = fieldOf(message);
    $("err-" + target).textContent = message;
    if (target !== "form") {
      $("reg-" + target).setAttribute("aria-invalid", "true");
      $("reg-" + target).focus();
    }
  }

  // ---------- scope ----------
  // `GET /auth/whoami` says what the token may do; the page only hides what it cannot (the API still decides).
  async function loadScope() {
    const res = await api("GET", "/auth/whoami");
    const scope = res.status === 200 ? res.data.scope : "read";
    app.whoami = res.status === 200 ? res.data : null;
    app.caps = { operate: scope === "operate" || scope === "admin", admin: scope === "admin" };
    document.body.dataset.scope = scope;
    $("nav-register").hidden = !app.caps.admin;
  }

  // ---------- views and start ----------
  function show(view) {
    app.view = view;
    for (const name of ["login", "list", "process", "monitor", "settings", "register"]) $("view-" + name).hidden = name !== view;
    for (const link of document.querySelectorAll("#nav a")) {
      const current = link.getAttribute("href") === location.hash || (link.getAttribute("href") === "#/" && view === "list" && !location.hash);
      if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
    }
    if (view !== "process") { stopLog(); app.current = null; }
  }
  function route() {
    if (!app.started) { show("login"); return; }
    const hash = location.hash || "#/";
    if (hash.startsWith("#/p/")) {
      show("process");
      showProcess(decodeURIComponent(hash.slice(4)));
    } else if (hash === "#/monitor") { show("monitor"); loadMonitor(); }
    else if (hash === "#/settings") { show("settings"); loadSettings(); }
    else if (hash === "#/register") { show("register"); }
    else { show("list"); renderList(); }
    $("main").focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
  async function start() {
    const res = await api("GET", "/processes");
    if (res.status !== 200) return res;
    for (const status of res.data.processes || []) app.procs.set(status.id, status);
    app.started = true;
    $("nav").hidden = false;
    await loadScope();
    sample();
    renderList();
    loadMonitor();
    runEvents();
    poll();
    route();
    return res;
  }
  function logout(message) {
    app.started = false;
    sessionStorage.removeItem(TOKEN_KEY);
    app.token = null;
    if (stream.controller) stream.controller.abort();
    stopLog();
    $("nav").hidden = true;
    app.procs.clear();
    rows.clear();
    clear($("procs-body"));
    setConn(false, "signed out");
    show("login");
    $("login-error").textContent = message || "";
    $("token").focus();
  }
  async function login(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    app.token = token || null;
    $("login-error").textContent = "";
    const res = await start();
    if (res.status !== 200) {
      app.token = null;
      $("login-error").textContent = res.status === 401 ? "This token is not accepted (unknown, expired or revoked)." : errorText(res);
      return;
    }
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
  }

  document.addEventListener("DOMContentLoaded", async () => {
    $("login-form").addEventListener("submit", login);
    $("reg-form").addEventListener("submit", register);
    $("logout").addEventListener("click", () => logout(""));
    $("mon-restart").addEventListener("click", async () => {
      if (!(await confirmDialog("Restart the monitor? Running processes are adopted, not stopped."))) return;
      const res = await api("POST", "/monitor/restart");
      toast(res.status === 200 ? "Monitor restart initiated" : "Restart failed: " + errorText(res), res.status === 200);
    });
    for (const id of ["log-stream", "log-run", "log-follow"]) $(id).addEventListener("change", openLog);
    window.addEventListener("hashchange", route);
    if (app.token) {
      const res = await start();
      if (res.status !== 200) logout(res.status === 401 ? "The stored token was refused. Sign in again." : errorText(res));
    } else {
      show("login");
      $("token").focus();
    }
  });
})();
