/* p2pstore status page: plain JS, no build step.
 *
 * Every piece of text coming from the node goes into the DOM through textContent / text nodes
 * (the el() helper), never through innerHTML, so a key like "<script>..." shows as text.
 */
"use strict";
(() => {
  const STATUS_INTERVAL_MS = 1000;
  const OVERVIEW_INTERVAL_MS = 2000;
  const FILES_INTERVAL_MS = 2000;
  const CHART_SECONDS = 180;
  const PALETTE = ["#0d6efd", "#d63384", "#198754", "#fd7e14", "#6f42c1", "#20c997", "#dc3545", "#0dcaf0"];
  const PAGE_SIZE = 50;
  const TOKEN_KEY = "p2pstore.apiToken";
  const STATE_CLASS = {
    alive: "text-bg-success",
    suspect: "text-bg-warning",
    dead: "text-bg-danger",
    left: "text-bg-secondary",
  };

  const state = {
    status: null,
    replicas: 3,
    folder: "",
    prefix: "",
    after: "",
    colors: {},
    afterStack: [],
    next: null,
    filesSig: "",
    memberIds: "",
    versionsKey: null,
    versionsSig: "",
    buckets: new Set(),  // "name/" of the S3 buckets, from the root listing
  };

  const $ = (id) => document.getElementById(id);

  /** Create an element; props: class, text, on<event>, other attributes. Children are appended as text-safe nodes. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = String(v);
      else if (k === "style") node.style.cssText = String(v); // CSSOM: allowed by the page's CSP
      else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  // ---------------------------------------------------------------- formatting

  function humanSize(n) {
    if (typeof n !== "number" || !isFinite(n)) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)} ${units[i]}`;
  }

  /** Decimal units, as disks are sold and as the node's own warnings say: "1.2 GB". */
  function humanSI(n) {
    if (typeof n !== "number" || !isFinite(n)) return "—";
    const units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let i = 0;
    while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return i === 0 ? `${Math.round(n)} B` : `${n.toFixed(n < 100 ? 1 : 0)} ${units[i]}`;
  }

  /** A key as text that may wrap after "/", "-", "_" and "." (never letter by letter). */
  function keyText(text, cls) {
    const span = el("span", { class: cls || "key-text" });
    const parts = String(text).split(/(?<=[/\-_.])/);
    parts.forEach((p, i) => { span.append(p); if (i < parts.length - 1) span.append(el("wbr")); });
    return span;
  }

  function fmtDate(unix) {
    if (typeof unix !== "number" || !unix) return "—";
    return new Date(unix * 1000).toLocaleString();
  }

  function ago(unix) {
    if (typeof unix !== "number" || !unix) return "—";
    const s = Math.max(0, Date.now() / 1000 - unix);
    if (s < 1.5) return "now";
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 129600) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  function duration(sec) {
    if (typeof sec !== "number") return "—";
    const d = Math.floor(sec / 86400), h = Math.floor(sec / 3600) % 24, m = Math.floor(sec / 60) % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${Math.floor(sec % 60)}s`;
    return `${Math.floor(sec)}s`;
  }

  const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

  // ---------------------------------------------------------------- HTTP

  const token = () => localStorage.getItem(TOKEN_KEY) || "";
  const authHeaders = () => (token() ? { Authorization: `Bearer ${token()}` } : {});

  class ApiError extends Error {
    constructor(status, message, detail, body) {
      super(message);
      this.status = status;
      this.detail = detail;
      this.body = body;
    }
  }

  function parseBody(text) {
    if (!text) return null;
    try { return JSON.parse(text); } catch { return text; }
  }

  function errorFrom(status, data) {
    const msg = isObj(data) && data.error ? String(data.error) : status ? `HTTP ${status}` : "node unreachable";
    return new ApiError(status, msg, isObj(data) ? data.detail : null, data);
  }

  async function api(method, path) {
    let resp;
    try {
      resp = await fetch(path, { method, headers: authHeaders(), cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, "node unreachable", String(e), null);
    }
    const data = parseBody(await resp.text());
    if (!resp.ok) throw errorFrom(resp.status, data);
    return data;
  }

  const fileUrl = (key) => "/files/" + key.split("/").map(encodeURIComponent).join("/");

  function describeError(e) {
    let text = e.message || String(e);
    if (e.status) text += ` (HTTP ${e.status})`;
    if (e.detail !== null && e.detail !== undefined && e.detail !== "") {
      text += ": " + (typeof e.detail === "string" ? e.detail : JSON.stringify(e.detail));
    }
    return text;
  }

  // ---------------------------------------------------------------- messages

  function showMessage(kind, text) {
    const alert = el("div", { class: `alert alert-${kind} alert-dismissible fade show py-2`, role: "alert" },
      el("span", { class: "msg-text", text }),
      el("button", { type: "button", class: "btn-close py-2", "data-bs-dismiss": "alert", "aria-label": "Close" }));
    $("messages").prepend(alert);
    while ($("messages").children.length > 4) $("messages").lastElementChild.remove();
    if (kind === "success" || kind === "info") setTimeout(() => alert.remove(), 6000);
  }

  // ---------------------------------------------------------------- status / cluster

  function setConn(ok, why) {
    const badge = $("conn-state");
    badge.textContent = ok ? "live" : "offline";
    badge.className = `badge ms-2 ${ok ? "text-bg-success" : "text-bg-danger"}`;
    badge.title = ok ? "" : why || "";
  }

  function renderStatus(s) {
    $("node-id").textContent = s.node_id || "?";
    $("node-version").textContent = s.version ? `v${s.version}` : "";
    document.title = `p2pstore status — ${s.node_id}`;
    if (isObj(s.replication) && typeof s.replication.replicas === "number") state.replicas = s.replication.replicas;

    const disk = isObj(s.disk) ? s.disk : {};
    $("node-stats").textContent = [
      `files ${s.files ?? "—"}`,
      `data ${humanSize(s.bytes)}`,
      `chunks ${s.chunks ?? "—"}`,
      `tombstones ${s.tombstones ?? "—"}`,
      `disk free ${humanSize(disk.free)} of ${humanSize(disk.total)}`,
      `up ${duration(s.uptime)}`,
    ].join(" · ");

    renderSecurity(s);
    renderMembers(s);
  }

  // Node-to-node traffic without TLS, or peers refusing this node: shown, never silent.
  function renderSecurity(s) {
    const badge = $("security");
    const sec = isObj(s.security) ? s.security : {};
    const note = s.join_error ? `not joined: ${s.join_error}` : sec.warning ? "plain HTTP between nodes" : "";
    badge.textContent = note;
    badge.title = s.join_error || sec.warning || "";
    badge.className = `badge ms-2 ${s.join_error ? "text-bg-danger" : "text-bg-warning"}${note ? "" : " d-none"}`;
  }

  function renderMembers(s) {
    const members = Array.isArray(s.members) ? s.members : null;
    const leader = s.leader ?? null;
    const lead = $("leader");
    lead.replaceChildren();
    if (!("leader" in s) && !members) {
      lead.append(el("span", { class: "text-body-secondary", text: "leader: not reported" }));
    } else if (leader) {
      lead.append("leader ", el("span", { class: "leader-mark", text: "★ " }), el("code", { text: leader }));
    } else {
      lead.append(el("span", { class: "badge text-bg-warning", text: "no leader" }));
    }
    if (typeof s.term === "number") lead.append(el("span", { class: "text-body-secondary", text: ` · term ${s.term}` }));

    const tbody = $("members");
    $("members-empty").classList.toggle("d-none", !!members);
    const list = members || [];
    tbody.replaceChildren(...list.map((m) => {
      const st = String(m.state || "unknown");
      const idCell = el("td", null, el("code", { class: "member-id", text: m.id }));
      if (m.id === leader) idCell.append(" ", el("span", { class: "badge text-bg-warning leader-badge", title: "leader", text: "★ leader" }));
      if (m.self) idCell.append(" ", el("span", { class: "badge text-bg-light border", text: "this node" }));
      return el("tr", { "data-node-id": m.id, "data-state": st },
        idCell,
        el("td", null, el("span", { class: `badge state-badge ${STATE_CLASS[st] || "text-bg-secondary"}`, text: st })),
        el("td", { class: "d-none d-md-table-cell", text: m.address || "—" }),
        el("td", { class: "text-end d-none d-sm-table-cell", text: m.incarnation ?? "—" }),
        el("td", { class: "text-end text-nowrap", title: fmtDate(m.last_seen), text: m.self ? "now" : ago(m.last_seen) }));
    }));
    updateRecoverSelect(list, s.node_id);
  }

  function updateRecoverSelect(members, selfId) {
    const ids = members.length ? members.map((m) => m.id) : selfId ? [selfId] : [];
    const sig = ids.join("\n");
    if (sig === state.memberIds) return;
    state.memberIds = sig;
    const select = $("recover-node");
    const keep = select.value;
    select.replaceChildren(el("option", { value: "", text: "choose a node…" }),
      ...ids.map((id) => el("option", { value: id, text: id })));
    if (ids.includes(keep)) select.value = keep;
  }

  // ---------------------------------------------------------------- cluster overview

  function colorOf(id) {
    if (!(id in state.colors)) state.colors[id] = PALETTE[Object.keys(state.colors).length % PALETTE.length];
    return state.colors[id];
  }

  function renderWarnings(warnings) {
    const box = $("warnings");
    box.replaceChildren(...(warnings || []).map((w) =>
      el("div", { class: `alert alert-${w.level === "danger" ? "danger" : "warning"} py-2 mb-2 cluster-warning`,
        role: "alert", "data-kind": w.kind, "data-node": w.node || "" },
        el("strong", { text: w.level === "danger" ? "⚠ " : "! " }), el("span", { text: w.text }))));
  }

  function renderDisks(nodes, warnings) {
    const level = {};
    for (const w of warnings || []) if (w.kind === "disk") level[w.node] = w.level;
    $("disks").replaceChildren(...nodes.map((n) => {
      const head = el("div", { class: "d-flex justify-content-between flex-wrap gap-1 small" },
        el("code", { text: n.node_id }));
      const row = el("div", { class: "disk-row mb-2", "data-node-id": n.node_id }, head);
      if (!n.ok || !isObj(n.disk)) {
        head.append(el("span", { class: "text-danger", text: "not answering" }));
        row.append(el("div", { class: "progress disk-bar" }));
        return row;
      }
      const { total, used, free } = n.disk;
      const pct = total > 0 ? Math.round((used / total) * 100) : 0;
      head.append(el("span", { class: "text-body-secondary disk-text",
        text: `${pct} % used · ${humanSI(free)} free of ${humanSI(total)}` }));
      const color = level[n.node_id] === "danger" ? "bg-danger" : level[n.node_id] ? "bg-warning" : "bg-primary";
      row.append(el("div", { class: "progress disk-bar", role: "progressbar", "aria-valuenow": pct,
        "aria-valuemin": 0, "aria-valuemax": 100, "aria-label": `disk of ${n.node_id}`, title: `${humanSI(used)} used` },
        el("div", { class: `progress-bar ${color}`, style: `width: ${pct}%` })));
      return row;
    }));
  }

  function renderRepair(nodes) {
    const box = $("repair");
    const rows = nodes.map((n) => {
      const line = el("div", { class: "repair-line mb-2", "data-node-id": n.node_id });
      if (!n.ok) {
        line.append(el("span", { class: "text-body-secondary", text: `${n.node_id}: not answering (${n.error || "down"})` }));
        return line;
      }
      const r = isObj(n.repair) ? n.repair : {};
      if (n.repair_text) {
        const pct = r.bytes_to_copy > 0 ? Math.round((r.pass_copied / r.bytes_to_copy) * 100) : 0;
        line.setAttribute("data-running", "1");
        line.append(el("div", { class: "repair-text fw-semibold", text: n.repair_text }),
          el("div", { class: "progress upload-progress mt-1" },
            el("div", { class: "progress-bar bg-info", style: `width: ${pct}%` })));
      } else {
        let text = `${n.node_id}: every copy it should hold is in place`;
        if (r.last_pass_started && r.bytes_copied) text += ` · ${humanSI(r.bytes_copied)} re-synced since it started`;
        line.append(el("span", { class: "repair-text", text }));
      }
      if (r.failures) line.append(el("div", { class: "text-danger", text: `${r.failures} failed copies, last: ${r.last_error || "?"} (retried)` }));
      return line;
    });
    box.replaceChildren(...(rows.length ? rows : [el("span", { class: "text-body-secondary", text: "No repair information reported." })]));
  }

  /** A line chart as inline SVG: one polyline per node over the last CHART_SECONDS. */
  function drawChart(id, lines, now, unit) {
    const W = 320, H = 130, L = 36, B = 16, T = 6;
    const fig = $(id);
    const max = Math.max(0, ...lines.flatMap((l) => l.values.map((p) => p[1])));
    const top = max > 0 ? niceCeil(max) : 1;
    const x = (t) => L + ((t - (now - CHART_SECONDS)) / CHART_SECONDS) * (W - L - 2);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    const mk = (tag, attrs, text) => {
      const n = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
      if (text !== undefined) n.textContent = text;
      return n;
    };
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("class", "chart-svg");
    svg.setAttribute("role", "img");
    svg.setAttribute("data-max", String(max));
    svg.setAttribute("data-points", String(lines.reduce((a, l) => a + l.values.length, 0)));
    for (const v of [0, top / 2, top]) {
      svg.append(mk("line", { x1: L, x2: W - 2, y1: y(v), y2: y(v), class: "chart-grid" }));
      svg.append(mk("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end", class: "chart-label" }, fmtNum(v)));
    }
    svg.append(mk("text", { x: L, y: H - 3, class: "chart-label" }, "−3 min"));
    svg.append(mk("text", { x: W - 2, y: H - 3, "text-anchor": "end", class: "chart-label" }, "now"));
    for (const l of lines) {
      const pts = l.values.filter((p) => p[0] >= now - CHART_SECONDS).map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
      if (pts.length) svg.append(mk("polyline", { points: pts.join(" "), class: "chart-line", stroke: l.color, "data-node-id": l.id }));
    }
    const legend = el("div", { class: "chart-legend small" }, ...lines.map((l) => {
      const last = l.values.length ? l.values[l.values.length - 1][1] : 0;
      return el("span", { class: "me-2 text-nowrap" }, el("span", { class: "swatch", style: `background:${l.color}` }),
        el("code", { text: l.id }), ` ${fmtNum(last)} ${unit}`);
    }));
    const caption = fig.querySelector("figcaption");
    fig.replaceChildren(caption, svg, legend);
  }

  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function fmtNum(v) {
    if (v >= 100) return String(Math.round(v));
    if (v >= 10) return v.toFixed(1).replace(/\.0$/, "");
    if (v > 0 && v < 1) return String(Number(v.toPrecision(2)));  // 0.005, not a second "0.01"
    return v.toFixed(2).replace(/\.?0+$/, "") || "0";
  }

  function renderCharts(nodes, now) {
    const pick = (n, f) => {
      const s = n.series || {};
      const t = Array.isArray(s.t) ? s.t : [];
      return t.map((ts, i) => [ts, f(s, i)]);
    };
    const live = nodes.filter((n) => n.ok && isObj(n.series));
    const line = (n, f) => ({ id: n.node_id, color: colorOf(n.node_id), values: pick(n, f) });
    drawChart("chart-requests", live.map((n) => line(n, (s, i) => s.requests[i])), now, "req/s");
    drawChart("chart-mbps", live.map((n) => line(n, (s, i) => (s.bytes_in[i] + s.bytes_out[i]) / 1e6)), now, "MB/s");
    drawChart("chart-repair", live.map((n) => line(n, (s, i) => s.repair_left_bytes[i] / 1e6)), now, "MB");
  }

  async function pollOverview() {
    try {
      if (!document.hidden) {
        const o = await api("GET", "/status/cluster");
        const nodes = Array.isArray(o.nodes) ? o.nodes : [];
        for (const n of nodes) colorOf(n.node_id);
        renderWarnings(o.warnings);
        renderDisks(nodes, o.warnings);
        renderRepair(nodes);
        renderCharts(nodes, typeof o.now === "number" ? o.now : Date.now() / 1000);
      }
    } catch (e) {
      // the connection badge already says the node is unreachable
    } finally {
      setTimeout(pollOverview, OVERVIEW_INTERVAL_MS);
    }
  }

  async function pollStatus() {
    try {
      const s = await api("GET", "/status");
      state.status = s;
      setConn(true);
      renderStatus(s);
    } catch (e) {
      setConn(false, describeError(e));
    } finally {
      setTimeout(pollStatus, STATUS_INTERVAL_MS);
    }
  }

  // ---------------------------------------------------------------- files

  /** The current folder's sub-folders and files (``delimiter=/``: the node skips over each
   * sub-folder in its index), or, with a search, every key under folder + search text. */
  async function loadFiles(force) {
    const q = new URLSearchParams({ limit: String(PAGE_SIZE), long: "1" });
    const searching = !!state.prefix;
    q.set("prefix", state.folder + state.prefix);
    if (!searching) q.set("delimiter", "/");
    if (state.after) q.set("after", state.after);
    try {
      const data = await api("GET", "/files?" + q.toString());
      const sig = JSON.stringify([state.folder, data]);
      if (!force && sig === state.filesSig) return;
      state.filesSig = sig;
      renderFiles(data);
    } catch (e) {
      if (force) showMessage("danger", `Listing files failed: ${describeError(e)}`);
    }
  }

  function openFolder(folder) {
    state.folder = folder;
    state.prefix = "";
    $("search").value = "";
    state.after = "";
    state.afterStack = [];
    renderCrumbs();
    loadFiles(true);
  }

  function renderCrumbs() {
    const parts = state.folder ? state.folder.slice(0, -1).split("/") : [];
    const crumbs = [{ name: "all files", folder: "" }];
    parts.forEach((p, i) => crumbs.push({ name: p, folder: parts.slice(0, i + 1).join("/") + "/" }));
    $("crumbs").replaceChildren(...crumbs.map((c, i) => {
      const last = i === crumbs.length - 1;
      const li = el("li", { class: `breadcrumb-item${last ? " active" : ""}`, "data-folder": c.folder });
      if (last) {
        li.setAttribute("aria-current", "page");
        li.append(keyText(c.name, "crumb-text"));
      } else {
        li.append(el("a", { href: "#", class: "crumb-link", onclick: (ev) => { ev.preventDefault(); openFolder(c.folder); } },
          keyText(c.name, "crumb-text")));
      }
      if (i === 1 && state.buckets.has(c.folder)) {  // inside a bucket, say so
        li.append(" ", el("span", { class: "badge text-bg-info bucket-badge", title: "an S3 bucket", text: "S3" }));
      }
      return li;
    }));
    $("drop-folder").textContent = state.folder || "/";
  }

  /** A small folder drawing (inline SVG: no icon font, no emoji font needed). */
  function folderIcon() {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 16 16");
    svg.setAttribute("class", "folder-icon");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", "M1 3.5A1.5 1.5 0 0 1 2.5 2h3.6l1.5 1.5h5.9A1.5 1.5 0 0 1 15 5v7.5a1.5 1.5 0 0 1-1.5 1.5h-11A1.5 1.5 0 0 1 1 12.5z");
    svg.append(path);
    return svg;
  }

  function folderRow(prefix, isBucket) {
    const name = prefix.slice(state.folder.length);
    const link = el("a", { href: "#", class: "folder-link", onclick: (ev) => { ev.preventDefault(); openFolder(prefix); } },
      folderIcon(), keyText(name));
    const cell = el("td", { class: "key-cell", colspan: 6 }, link);
    if (isBucket) cell.append(" ", el("span", { class: "badge text-bg-info bucket-badge", title: "an S3 bucket: the same files through the S3 API", text: "S3 bucket" }));
    return el("tr", { class: "folder-row", "data-prefix": prefix, "data-bucket": isBucket ? "1" : "0" }, cell);
  }

  function replicaCell(f) {
    const td = el("td", { class: "replicas" });
    if (!Array.isArray(f.replicas)) {
      td.append(el("span", { class: "text-body-secondary", text: "—" }));
      return td;
    }
    const verified = f.replicas.filter((r) => r && r.verified).length;
    td.setAttribute("data-verified", String(verified));
    for (const r of f.replicas) {
      const ok = !!(r && r.verified);
      td.append(el("span", { class: "replica", title: ok ? "verified copy" : "copy not verified" },
        el("code", { text: String(r && r.node) }),
        el("span", { class: ok ? "replica-ok" : "replica-bad", text: ok ? " ✓" : " ✗" })), " ");
    }
    if (verified < state.replicas) {
      td.append(el("span", { class: "badge text-bg-warning replica-warning", text: `${verified}/${state.replicas} verified` }));
    }
    return td;
  }

  function renderFiles(data) {
    const files = Array.isArray(data.files) ? data.files : [];
    const prefixes = Array.isArray(data.prefixes) ? data.prefixes.slice() : [];
    const buckets = new Set(Array.isArray(data.buckets) ? data.buckets.map((b) => b + "/") : []);
    state.next = data.next || null;
    if (Array.isArray(data.buckets)) state.buckets = buckets;
    if (buckets.size && !state.after) {  // empty buckets are folders too; they hold no key yet
      for (const b of buckets) if (!prefixes.includes(b) && (!state.next || b <= state.next)) prefixes.push(b);
      prefixes.sort();
    }
    $("files-empty").classList.toggle("d-none", files.length + prefixes.length > 0);
    const folderRows = prefixes.map((p) => folderRow(p, buckets.has(p)));
    $("files").replaceChildren(...folderRows, ...files.map((f) => {
      const name = f.key.split("/").pop();
      const download = el("a", {
        class: "btn btn-sm btn-outline-primary download-link", href: fileUrl(f.key), download: name,
        title: "download", text: "Download",
      });
      download.addEventListener("click", (ev) => downloadWithToken(ev, f.key, name));
      const del = el("button", { type: "button", class: "btn btn-sm btn-outline-danger delete-btn", text: "Delete" });
      del.addEventListener("click", () => deleteFile(f.key));
      const vers = el("button", { type: "button", class: "btn btn-sm btn-outline-secondary versions-btn", text: "Versions",
        title: "this file's versions: download or restore an older one" });
      vers.addEventListener("click", () => openVersions(f.key));
      const sha = String(f.sha256 || "");
      const shown = f.key.startsWith(state.folder) ? f.key.slice(state.folder.length) : f.key;
      return el("tr", { class: "file-row", "data-key": f.key },
        el("td", { class: "key-cell", title: f.key }, keyText(shown)),
        el("td", { class: "text-end text-nowrap", title: `${f.size} bytes`, text: humanSize(f.size) }),
        el("td", { class: "d-none d-md-table-cell text-nowrap", text: fmtDate(f.modified) }),
        el("td", { class: "d-none d-lg-table-cell sha", title: sha, text: sha.slice(0, 12) }),
        replicaCell(f),
        el("td", { class: "text-end text-nowrap btn-row" }, download, " ", vers, " ", del));
    }));
    $("prev-page").disabled = state.afterStack.length === 0;
    $("next-page").disabled = !state.next;
    const page = state.afterStack.length + 1;
    $("page-info").textContent = `page ${page}${state.prefix ? ` · search “${state.prefix}”` : ""}`;
  }

  /** Links cannot carry an Authorization header: with a token, fetch the file and save the blob. */
  async function downloadWithToken(ev, key, name, url) {
    if (!token()) return;
    ev.preventDefault();
    try {
      const resp = await fetch(url || fileUrl(key), { headers: authHeaders() });
      if (!resp.ok) throw errorFrom(resp.status, parseBody(await resp.text()));
      const blobUrl = URL.createObjectURL(await resp.blob());
      const a = el("a", { href: blobUrl, download: name });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(blobUrl), 10000);
    } catch (e) {
      showMessage("danger", `Download of ${key} failed: ${describeError(e)}`);
    }
  }

  /** The versioning of a key's top-level folder ("Off" for a key outside any folder or on error). */
  async function versioningOf(key) {
    if (!key.includes("/")) return "Off";
    try {
      const data = await api("GET", `/versioning/${encodeURIComponent(key.split("/")[0])}`);
      return String((data && data.status) || "Off");
    } catch {
      return "Off";
    }
  }

  async function deleteFile(key) {
    const kept = (await versioningOf(key)) === "Enabled";
    const question = kept
      ? `Delete ${key}? Its folder keeps versions: a delete marker hides it, and Versions can restore it.`
      : `Delete ${key}? This removes it from every replica.`;
    if (!window.confirm(question)) return;
    try {
      await api("DELETE", fileUrl(key));
      showMessage("success", `Deleted ${key}`);
    } catch (e) {
      showMessage("danger", `Delete of ${key} failed: ${describeError(e)}`);
    }
    await loadFiles(true);
  }

  // ---------------------------------------------------------------- versions

  const versionUrl = (key, vid) => `${fileUrl(key)}?version=${encodeURIComponent(vid)}`;

  /** Show a file's versions (``GET /files/{key}?versions=1``) under the file list. */
  async function openVersions(key) {
    state.versionsKey = key;
    $("versions-key").replaceChildren(keyText(key));
    $("versions-panel").classList.remove("d-none");
    await loadVersions();
    $("versions-panel").scrollIntoView({ block: "nearest" });
  }

  function closeVersions() {
    state.versionsKey = null;
    $("versions-panel").classList.add("d-none");
    $("versions").replaceChildren();
  }

  /** (Re-)list the open file's versions; a poll with nothing new leaves the rows alone. */
  async function loadVersions(force = true) {
    const key = state.versionsKey;
    if (!key) return;
    try {
      const data = await api("GET", `${fileUrl(key)}?versions=1`);
      const sig = JSON.stringify([key, data]);
      if (state.versionsKey !== key || (!force && sig === state.versionsSig)) return;
      state.versionsSig = sig;
      renderVersions(key, data);
    } catch (e) {
      state.versionsSig = "";
      $("versions").replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "text-danger small versions-error",
        text: `Listing the versions of ${key} failed: ${describeError(e)}` })));
    }
  }

  function renderVersions(key, data) {
    const versions = Array.isArray(data.versions) ? data.versions : [];
    const status = String(data.versioning || "Off");
    $("versions-status").textContent = `versioning ${status}`;
    const name = key.split("/").pop();
    $("versions").replaceChildren(...versions.map((v, i) => {
      const vid = String(v.version);
      const idCell = el("td", { class: "version-cell", title: vid }, el("code", {}, keyText(vid, "version-id")));
      if (v.latest) idCell.append(" ", el("span", { class: "badge text-bg-success version-current", text: "current" }));
      if (v.delete_marker) idCell.append(" ", el("span", { class: "badge text-bg-secondary version-marker", text: "delete marker" }));
      const actions = el("td", { class: "text-end text-nowrap btn-row" });
      if (!v.delete_marker) {
        const url = versionUrl(key, vid);
        const dl = el("a", { class: "btn btn-sm btn-outline-primary version-download", href: url, download: name,
          title: `download this version of ${name}`, text: "Download" });
        dl.addEventListener("click", (ev) => downloadWithToken(ev, key, name, url));
        actions.append(dl);
        if (!v.latest) {
          const rb = el("button", { type: "button", class: "btn btn-sm btn-outline-warning version-restore", text: "Restore",
            title: "make this version the current one again" });
          rb.addEventListener("click", () => restoreVersion(key, vid));
          actions.append(" ", rb);
        }
      }
      const sha = String(v.sha256 || "");
      return el("tr", { class: "version-row", "data-version": vid, "data-index": String(i),
        "data-delete-marker": v.delete_marker ? "1" : "0" },
        idCell,
        el("td", { class: "text-nowrap version-time", title: String(v.modified), text: fmtDate(v.modified) }),
        el("td", { class: "text-end text-nowrap version-size", title: `${v.size} bytes`, text: v.delete_marker ? "—" : humanSize(v.size) }),
        el("td", { class: "d-none d-lg-table-cell sha", title: sha, text: sha.slice(0, 12) }),
        actions);
    }));
  }

  /** ``POST /restore/{key}?version=V``: the version becomes current again (its bytes, a new version). */
  async function restoreVersion(key, vid) {
    try {
      await api("POST", `/restore/${key.split("/").map(encodeURIComponent).join("/")}?version=${encodeURIComponent(vid)}`);
      showMessage("success", `Restored ${key} to version ${vid}`);
    } catch (e) {
      showMessage("danger", `Restore of ${key} to ${vid} failed: ${describeError(e)}`);
    }
    await loadVersions();
    await loadFiles(true);
  }

  async function pollFiles() {
    if (!document.hidden) {
      await loadFiles(false);
      await loadVersions(false);  // a version written elsewhere shows up while the panel is open
    }
    setTimeout(pollFiles, FILES_INTERVAL_MS);
  }

  // ---------------------------------------------------------------- upload

  /** The key a file is stored under: the key field if given (ending in "/" = a folder), else
   * the folder being browsed + the file's name. */
  function keyFor(file, field, count) {
    if (!field) return state.folder + file.name;
    if (field.endsWith("/")) return field + file.name;
    return count === 1 ? field : `${field}/${file.name}`;
  }

  /** PUT the File object as the request body: the browser streams it from disk (never read
   * into memory here), and upload progress events move the bar. */
  function uploadOne(file, key) {
    const bar = el("div", { class: "progress-bar", role: "progressbar", "aria-valuenow": 0, "aria-valuemin": 0,
      "aria-valuemax": 100, "aria-label": `upload of ${key}` });
    const text = el("span", { class: "upload-status", text: `uploading 0 B of ${humanSI(file.size)}…` });
    const item = el("li", { class: "list-group-item px-0 upload-item", "data-name": file.name, "data-key": key },
      el("div", { class: "upload-name fw-semibold" }, keyText(key)),
      el("div", { class: "progress upload-progress my-1" }, bar),
      text);
    $("upload-results").prepend(item);

    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", fileUrl(key));
      for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
      xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
      const started = Date.now();
      xhr.upload.addEventListener("progress", (ev) => {
        if (!ev.lengthComputable || !ev.total) return;
        const pct = Math.floor((ev.loaded / ev.total) * 100);
        bar.style.width = `${pct}%`;
        bar.setAttribute("aria-valuenow", String(pct));
        const secs = (Date.now() - started) / 1000;
        const rate = secs > 0 ? ev.loaded / secs : 0;
        text.textContent = `uploading ${humanSI(ev.loaded)} of ${humanSI(ev.total)}` + (rate ? ` · ${humanSI(rate)}/s` : "");
      });
      const finish = (ok, message) => {
        bar.style.width = "100%";
        bar.setAttribute("aria-valuenow", "100");
        bar.classList.add(ok ? "bg-success" : "bg-danger");
        text.textContent = message;
        text.className = `upload-status ${ok ? "text-success" : "text-danger"}`;
        item.setAttribute("data-result", ok ? "ok" : "error");
        resolve(ok);
      };
      xhr.addEventListener("load", () => {
        const data = parseBody(xhr.responseText);
        if (xhr.status >= 200 && xhr.status < 300 && isObj(data)) {
          const reps = Array.isArray(data.replicas) ? data.replicas.join(", ") : "?";
          text.title = `version ${data.version}, sha256 ${data.sha256}`;
          finish(true, `uploaded ${humanSize(data.size)} · stored on ${reps}`);
        } else {
          finish(false, `failed: ${describeError(errorFrom(xhr.status, data))}`);
        }
      });
      xhr.addEventListener("error", () => finish(false, "failed: network error"));
      xhr.addEventListener("abort", () => finish(false, "aborted"));
      xhr.send(file);
    });
  }

  async function uploadFiles(files, field) {
    const btn = $("upload-btn");
    btn.disabled = true;
    try {
      for (const f of files) await uploadOne(f, keyFor(f, field, files.length));
    } finally {
      btn.disabled = false;
      await loadFiles(true);
    }
  }

  async function onUpload(ev) {
    ev.preventDefault();
    const files = Array.from($("upload-file").files || []);
    if (!files.length) return;
    const field = $("upload-key").value.trim();
    try {
      await uploadFiles(files, field);
    } finally {
      $("upload-form").reset();
    }
  }

  /** Drag and drop on the drop zone or the files card: upload into the folder being browsed. */
  function wireDrop(target) {
    let depth = 0;
    target.addEventListener("dragenter", (ev) => { ev.preventDefault(); depth++; target.classList.add("drag-over"); });
    target.addEventListener("dragover", (ev) => { ev.preventDefault(); if (ev.dataTransfer) ev.dataTransfer.dropEffect = "copy"; });
    target.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; target.classList.remove("drag-over"); } });
    target.addEventListener("drop", (ev) => {
      ev.preventDefault();
      depth = 0;
      target.classList.remove("drag-over");
      const files = Array.from((ev.dataTransfer && ev.dataTransfer.files) || []);
      if (files.length) uploadFiles(files, $("upload-key").value.trim());
    });
  }

  // ---------------------------------------------------------------- actions

  async function onCheckpoint() {
    const btn = $("checkpoint-btn");
    const list = $("checkpoint-results");
    btn.disabled = true;
    list.replaceChildren(el("li", { class: "list-group-item px-0 text-body-secondary", text: "checkpointing…" }));
    let results = null;
    let failure = null;
    try {
      results = (await api("POST", "/checkpoint")).results;
    } catch (e) {
      if (isObj(e.body) && Array.isArray(e.body.results)) results = e.body.results;
      else failure = e;
    } finally {
      btn.disabled = false;
    }
    if (failure) {
      list.replaceChildren(el("li", { class: "list-group-item px-0 text-danger", text: `Checkpoint failed: ${describeError(failure)}` }));
      return;
    }
    list.replaceChildren(...(results || []).map((r) =>
      el("li", { class: "list-group-item px-0 checkpoint-result", "data-node-id": r.node_id, "data-ok": r.ok ? "1" : "0" },
        el("code", { text: r.node_id }), " ",
        el("span", { class: `badge ${r.ok ? "text-bg-success" : "text-bg-danger"}`, text: r.ok ? "ok" : "failed" }), " ",
        el("span", { class: "text-body-secondary", text: r.ok ? String(r.checkpoint ?? "") : String(r.error ?? "") }))));
    if (!results || !results.length) list.replaceChildren(el("li", { class: "list-group-item px-0", text: "no results" }));
  }

  /** "Recovery of n2 done: 3 of 3 files re-synced (12.6 MB) in 2.1 s" from the re-sync report. */
  function recoverSentence(id, r) {
    if (!isObj(r) || typeof r.files_needing_repair !== "number") return `Recovery of ${id} done`;
    if (!r.files_needing_repair) return `Recovery of ${id} done: nothing was missing (checked in ${r.seconds} s)`;
    let text = `Recovery of ${id} done: ${r.files_repaired} of ${r.files_needing_repair} files re-synced ` +
      `(${humanSI(r.bytes_copied)}) in ${r.seconds} s`;
    if (r.files_failed) text += `; ${r.files_failed} failed and will be retried`;
    return text;
  }

  async function onRecover(ev) {
    ev.preventDefault();
    const id = $("recover-node").value;
    const out = $("recover-result");
    if (!id) return;
    const btn = $("recover-btn");
    btn.disabled = true;
    out.replaceChildren(el("span", { class: "text-body-secondary", text: `recovering ${id}…` }));
    try {
      const report = await api("POST", `/recover/${encodeURIComponent(id)}`);
      out.replaceChildren(el("div", { class: "alert alert-success py-2 mb-1 recover-done", text: recoverSentence(id, report) }));
    } catch (e) {
      const text = e.status === 404 && !(isObj(e.body) && e.body.detail)
        ? `Recovery is not available on this node (${e.message}, HTTP 404)`
        : `Recovery of ${id} failed: ${describeError(e)}`;
      out.replaceChildren(el("div", { class: "alert alert-danger py-2 mb-0 recover-error", text }));
    } finally {
      btn.disabled = false;
    }
  }

  // ---------------------------------------------------------------- wiring

  function init() {
    $("upload-form").addEventListener("submit", onUpload);
    $("checkpoint-btn").addEventListener("click", onCheckpoint);
    $("recover-form").addEventListener("submit", onRecover);
    wireDrop($("dropzone"));
    wireDrop($("files-card"));
    $("versions-close").addEventListener("click", closeVersions);
    $("versions-form").addEventListener("submit", (ev) => {  // a deleted file is not in the listing
      ev.preventDefault();
      const key = $("versions-input").value.trim();
      if (key) openVersions(key);
    });
    renderCrumbs();
    $("search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      state.prefix = $("search").value;
      state.after = "";
      state.afterStack = [];
      loadFiles(true);
    });
    $("next-page").addEventListener("click", () => {
      if (!state.next) return;
      state.afterStack.push(state.after);
      state.after = state.next;
      loadFiles(true);
    });
    $("prev-page").addEventListener("click", () => {
      if (!state.afterStack.length) return;
      state.after = state.afterStack.pop();
      loadFiles(true);
    });
    $("token").value = token();
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("token").value.trim();
      if (t) localStorage.setItem(TOKEN_KEY, t);
      else localStorage.removeItem(TOKEN_KEY);
      showMessage("info", t ? "API token saved in this browser" : "API token cleared");
      loadFiles(true);
    });
    pollStatus();
    pollOverview();
    loadFiles(true).then(() => setTimeout(pollFiles, FILES_INTERVAL_MS));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
