// The page of `blackboard serve`: one server-sent-event stream (a snapshot, then the board's own
// watch) and nothing polled. Rendering is incremental and capped: the log keeps the last EVENTS
// events and shows LOG_ROWS of them; the key tree shows one level of one prefix, at most TREE_ROWS
// rows, rebuilt at most every REDRAW ms. Every text from the board goes in with textContent.
"use strict";

const EVENTS = 2000, LOG_ROWS = 500, TREE_ROWS = 400, REDRAW = 200;
const $ = (id) => document.getElementById(id);

const state = {
  seq: 0, snapshotSeq: 0, agent: null, readOnly: true,
  events: [],               // the last EVENTS events, oldest first
  keys: new Map(),          // key -> [value, cut, version, author, ts, seq]
  sorted: [],               // the keys, sorted (for one level of a prefix)
  convs: new Map(),         // cid -> {meta..., turns}
  selected: null,           // the conversation shown
};

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function age(ts) {
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}
const ageCell = (ts) => el("td", { class: "age", "data-ts": ts, title: ts }, age(ts));

// -- the key tree ---------------------------------------------------------------------------------

function lowerBound(list, item) {
  let lo = 0, hi = list.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (list[mid] < item) lo = mid + 1; else hi = mid; }
  return lo;
}

function putKey(key, row) {
  if (!state.keys.has(key)) state.sorted.splice(lowerBound(state.sorted, key), 0, key);
  state.keys.set(key, row);
}

function dropKey(key) {
  if (!state.keys.delete(key)) return;
  state.sorted.splice(lowerBound(state.sorted, key), 1);
}

function drawKeys() {
  const prefix = $("keys-prefix").value;
  const tbody = $("keys");
  const rows = [], dirs = new Map();
  let shown = 0, more = 0;
  for (let i = lowerBound(state.sorted, prefix); i < state.sorted.length; i++) {
    const key = state.sorted[i];
    if (!key.startsWith(prefix)) break;
    const rest = key.slice(prefix.length), slash = rest.indexOf("/");
    if (slash >= 0) {  // a deeper key: one row for its directory at this level
      const dir = prefix + rest.slice(0, slash + 1);
      if (!dirs.has(dir)) { dirs.set(dir, 0); if (shown++ >= TREE_ROWS) more++; else rows.push(dir); }
      dirs.set(dir, dirs.get(dir) + 1);
    } else if (shown++ >= TREE_ROWS) more++;
    else rows.push(key);
  }
  const frag = document.createDocumentFragment();
  for (const name of rows) {
    if (dirs.has(name)) {
      frag.append(el("tr", { class: "dir", "data-prefix": name },
        el("td", {}, name.slice(prefix.length)), el("td", { class: "muted" }, `${dirs.get(name)} keys`),
        el("td"), el("td"), el("td")));
    } else {
      const [value, cut, version, author, ts] = state.keys.get(name);
      frag.append(el("tr", { class: "key", "data-key": name },
        el("td", { title: name }, name.slice(prefix.length)), el("td", { class: "v", title: value }, cut ? value + "…" : value),
        el("td", {}, version), el("td", {}, author), ageCell(ts)));
    }
  }
  if (more) frag.append(el("tr", {}, el("td", { class: "muted", colSpan: 5 }, `${more} more: narrow the prefix`)));
  tbody.replaceChildren(frag);
  $("keys-count").textContent = `${state.keys.size}`;
  const crumbs = $("keys-path");
  crumbs.replaceChildren(el("a", { "data-prefix": "" }, "/"));
  let at = 0;
  for (const part of prefix.split("/").slice(0, -1)) {
    at += part.length + 1;
    crumbs.append(el("a", { "data-prefix": prefix.slice(0, at) }, part + "/"));
  }
}

$("keys").addEventListener("click", async (event) => {
  const tr = event.target.closest("tr");
  if (!tr) return;
  if (tr.dataset.prefix !== undefined) { $("keys-prefix").value = tr.dataset.prefix; schedule("keys"); return; }
  if (tr.dataset.key === undefined) return;
  const box = $("entry");
  const response = await fetch("api/entry?key=" + encodeURIComponent(tr.dataset.key));
  const body = await response.json();
  box.textContent = response.ok ? JSON.stringify(body, null, 2) : body.error.message;
  box.hidden = false;
});
$("keys-path").addEventListener("click", (event) => {
  const a = event.target.closest("a");
  if (a) { $("keys-prefix").value = a.dataset.prefix; schedule("keys"); }
});
$("keys-prefix").addEventListener("input", () => schedule("keys"));

// -- the log ----------------------------------------------------------------------------------------

function matches(ev) {
  return ev.key.startsWith($("log-prefix").value) && ev.author.includes($("log-author").value);
}

function logRow(ev, fresh) {
  return el("tr", { class: fresh ? "ev fresh" : "ev", "data-seq": ev.seq, "data-key": ev.key, "data-author": ev.author },
    el("td", {}, ev.seq), ageCell(ev.ts), el("td", {}, ev.author), el("td", { class: "op-" + ev.op }, ev.op),
    el("td", { title: ev.key }, ev.key), el("td", { class: "v", title: ev.value }, ev.op === "delete" ? "" : ev.value + (ev.cut ? "…" : "")));
}

function drawLog(fresh) {
  const tbody = $("log");
  if (fresh === null) {  // the filter changed: from the events kept
    const rows = state.events.filter(matches).slice(-LOG_ROWS).reverse();
    tbody.replaceChildren(...rows.map((ev) => logRow(ev, false)));
  } else {  // newest first: prepend the new rows, drop the oldest past the cap
    const rows = fresh.filter(matches).slice(-LOG_ROWS).reverse();
    tbody.prepend(...rows.map((ev) => logRow(ev, true)));
    while (tbody.rows.length > LOG_ROWS) tbody.lastChild.remove();
  }
  $("log-count").textContent = `${tbody.rows.length} shown of ${state.events.length} kept`;
}
for (const id of ["log-prefix", "log-author"]) $(id).addEventListener("input", () => schedule("log"));

// -- conversations ----------------------------------------------------------------------------------

function lastSeq(conv) { return conv.turns.length ? conv.turns[conv.turns.length - 1].seq : 0; }

function drawConvs() {
  const list = [...state.convs.values()].sort((a, b) => lastSeq(b) - lastSeq(a));
  if (state.selected === null && list.length) state.selected = list[0].id;
  $("convs").replaceChildren(...list.map((c) => el("li", { class: c.id === state.selected ? "conv selected" : "conv", "data-id": c.id },
    c.topic || c.id, el("small", {}, `${c.participants.join(", ")} · ${c.turns.length} turns · ${c.state}`))));
  const conv = state.convs.get(state.selected);
  const chat = $("chat");
  if (!conv) { $("say").hidden = true; return; }
  $("chat-title").textContent = `${conv.topic} — ${conv.participants.join(", ")} (${conv.state}` +
    (conv.turn_limit ? `, ${conv.messages}/${conv.turn_limit} messages)` : ")");
  const atBottom = chat.scrollHeight - chat.scrollTop - chat.clientHeight < 30;
  chat.replaceChildren(...conv.turns.map((t) => el("div", { class: `turn ${t.kind}${t.from === state.agent ? " mine" : ""}`, "data-n": t.n, title: t.ts },
    el("span", { class: "from" }, t.from), el("span", { class: "text" }, typeof t.text === "string" ? t.text : JSON.stringify(t.text)))));
  if (atBottom) chat.scrollTop = chat.scrollHeight;
  $("say").hidden = state.readOnly || conv.state !== "open" || !conv.participants.includes(state.agent);
}

$("convs").addEventListener("click", (event) => {
  const li = event.target.closest("li");
  if (li) { state.selected = li.dataset.id; schedule("convs"); }
});

async function post(path, body) {
  const response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const out = await response.json();
  $("post-error").textContent = response.ok ? "" : out.error.message;
  return response.ok;
}

$("say").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("say-text");
  if (input.value && await post("api/say", { conversation: state.selected, text: input.value })) input.value = "";
});

// -- agents, inbox, work, stats --------------------------------------------------------------------

const sections = { agents: [], leases: [], queues: [], tasks: [], inbox: [], stats: {} };
const cls = (name) => "state-" + String(name).replace(/[^a-z-]/g, "");

const draw = {
  agents() {
    $("agents").replaceChildren(...sections.agents.map((a) => el("tr", { "data-name": a.name },
      el("td", { title: a.description }, a.name), el("td", { class: cls(a.state) }, a.state),
      el("td", {}, a.capabilities.join(", ")), ageCell(a.last_seen))));
  },
  leases() {
    $("leases").replaceChildren(...sections.leases.map((l) => el("tr", {},
      el("td", {}, l.key), el("td", {}, l.holder), el("td", {}, l.token),
      el("td", { class: l.expired ? "expired" : "", title: l.expires }, l.expired ? "expired" : l.expires.slice(11, 19)))));
  },
  queues() {
    $("queues").replaceChildren(...sections.queues.map((q) => el("tr", {},
      el("td", {}, q.group), el("td", {}, q.prefix), el("td", {}, q.pending_count),
      el("td", { class: q.dead_count ? "expired" : "", title: q.dead.map((d) => `${d.item}: ${d.reason ?? ""}`).join("\n") }, q.dead_count),
      el("td", { class: "v" }, q.pending.slice(0, 5).map((d) => `${d.key} → ${d.consumer} #${d.attempt}`).join("; ")))));
  },
  tasks() {
    $("tasks").replaceChildren(...sections.tasks.map((t) => el("tr", {},
      el("td", {}, t.id), el("td", { title: t.title }, t.title), el("td", { class: cls(t.state) }, t.state), el("td", {}, t.owner ?? ""))));
  },
  inbox() {
    $("inbox-box").hidden = state.readOnly;
    $("inbox-agent").textContent = state.agent ?? "";
    $("inbox").replaceChildren(...sections.inbox.map((m) => {
      const row = el("tr", { "data-id": m.id }, el("td", {}, m.kind), el("td", {}, m.from), el("td", { class: "v" }, JSON.stringify(m.body)));
      if (m.kind === "request") {
        const input = el("input", { placeholder: "reply (JSON or text)" });
        const form = el("form", { class: "reply" }, input, el("button", {}, "Reply"));
        form.addEventListener("submit", async (event) => {
          event.preventDefault();
          let body = input.value;
          try { body = JSON.parse(body); } catch { /* plain text is a JSON string */ }
          await post("api/reply", { id: m.id, body });
        });
        row.append(el("td", {}, form));
      }
      return row;
    }));
  },
  stats() {
    $("stats").replaceChildren(...Object.entries(sections.stats).flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-stat": k }, v)]));
  },
};

// -- scheduling: one redraw per kind per REDRAW ms --------------------------------------------------

const pending = new Set();
let freshEvents = [], timer = null;
function schedule(kind) {
  pending.add(kind);
  if (timer === null) timer = setTimeout(flush, pending.has("log") || pending.has("keys") ? 0 : REDRAW);
}
let lastTree = 0;
function flush() {
  timer = null;
  if (pending.has("keys") && Date.now() - lastTree < REDRAW) {  // the tree is the costly one: throttle it
    timer = setTimeout(flush, REDRAW - (Date.now() - lastTree));
    return;
  }
  if (pending.has("log")) { pending.delete("events"); freshEvents = []; }  // a full redraw has them
  for (const kind of pending) {
    if (kind === "log") drawLog(null);
    else if (kind === "events") { drawLog(freshEvents); freshEvents = []; }
    else if (kind === "keys") { drawKeys(); lastTree = Date.now(); }
    else if (kind === "convs") drawConvs();
    else draw[kind]();
  }
  pending.clear();
  $("seq").textContent = state.seq;
}

// -- the stream ---------------------------------------------------------------------------------------

function onSnapshot(snap) {
  Object.assign(state, { seq: snap.seq, snapshotSeq: snap.seq, agent: snap.agent, readOnly: snap.read_only, events: [] });
  state.keys = new Map(); state.sorted = [];
  for (const [key, ...row] of snap.keys) { state.keys.set(key, row); state.sorted.push(key); }
  state.convs = new Map(snap.conversations.map((c) => [c.id, c]));
  for (const name of Object.keys(sections)) sections[name] = snap[name];
  $("board").textContent = snap.board;
  $("mode").textContent = snap.read_only ? "read-only" : `posting as ${snap.agent}`;
  freshEvents = [];
  for (const kind of ["log", "keys", "convs", ...Object.keys(sections)]) schedule(kind);
}

function onEvents(events) {
  for (const ev of events) {
    state.seq = Math.max(state.seq, ev.seq);
    if (ev.seq > state.snapshotSeq) {  // the events up to the snapshot's seq are in the tree already
      if (ev.op === "delete") dropKey(ev.key);
      else putKey(ev.key, [ev.value, ev.cut, ev.version, ev.author, ev.ts, ev.seq]);
      if (ev.key.startsWith($("keys-prefix").value)) schedule("keys");
    }
  }
  state.events.push(...events);
  if (state.events.length > EVENTS) state.events.splice(0, state.events.length - EVENTS);
  freshEvents.push(...events);
  schedule("events");
}

function connect() {
  const source = new EventSource("api/stream");
  const status = $("status");
  source.addEventListener("open", () => { status.textContent = "live"; status.className = "badge live"; });
  source.addEventListener("error", () => { status.textContent = "reconnecting"; status.className = "badge down"; });
  source.addEventListener("snapshot", (m) => onSnapshot(JSON.parse(m.data)));
  source.addEventListener("events", (m) => onEvents(JSON.parse(m.data)));
  source.addEventListener("section", (m) => { const s = JSON.parse(m.data); sections[s.name] = s.data; schedule(s.name); });
  source.addEventListener("conversation", (m) => { const c = JSON.parse(m.data); state.convs.set(c.id, c); schedule("convs"); });
  source.addEventListener("failed", (m) => { status.textContent = JSON.parse(m.data).message; status.className = "badge down"; });
}

setInterval(() => { for (const td of document.querySelectorAll("td.age")) td.textContent = age(td.dataset.ts); }, 1000);
connect();
