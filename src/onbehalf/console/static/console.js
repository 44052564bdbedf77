// onbehalf dev console (DESIGN.md §9). The token lives in sessionStorage only and is sent
// only as the Authorization header; never in a URL, a cookie or a request body.
const KEY = "onbehalf.console.session";
const SERVERS_KEY = "onbehalf.console.servers";  // tool_call_id -> its server, for this tab
const $ = (id) => document.getElementById(id);
let session = null;
let currentThread = null;
let busy = false;
let cards = {};  // tool_call_id -> the open thread's tool cards (a resumed run ends them)
const ENDED_WELL = new Set(["ok"]);
const NOT_ENDED = new Set(["running", "paused"]);
// a connect link this page was opened with (DESIGN.md §8): kept in memory only, never sent
// anywhere before the person has read what it connects and pressed Confirm
let pendingFlow = takeFlowFromUrl();

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

function notice(text, kind = "info") {
  const n = $("notice");
  n.textContent = text;
  n.className = kind;
  n.hidden = !text;
}

function loadSession() {
  try { session = JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch { session = null; }
  return session;
}

function show(view) {  // "signin", "confirm" or "app": one at a time, the others hidden
  for (const id of ["signin", "confirm", "app"]) $(id).hidden = id !== view;
  $("who").hidden = !session;
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(SERVERS_KEY);
  session = null;
  currentThread = null;
  cards = {};
  $("log").replaceChildren();
  $("threads").replaceChildren();
  $("thread-info").textContent = "";
  $("who-name").textContent = "";
  $("signin-h").textContent = pendingFlow ? "Sign in to connect an account" : "Sign in as a dev user";
  $("signin-why").hidden = !pendingFlow;
  show("signin");
  notice(message || "", message ? "error" : "info");
}

async function api(method, path, body) {
  if (!session) { signOut(); throw new ApiError(401, "not signed in"); }  // never sent without
  const headers = { Accept: "application/json" };
  headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!resp.ok) throw await failure(resp);
  return resp;
}

async function failure(resp) {
  let detail = resp.statusText;
  try { detail = (await resp.json()).detail || detail; } catch { /* not JSON */ }
  if (resp.status === 401) signOut("Your sign-in expired, sign in again.");
  return new ApiError(resp.status, String(detail));
}

function explain(err) {
  if (err.status === 401) return "Your sign-in expired, sign in again.";
  if (err.status === 403) return `Not permitted: ${err.message}`;
  if (err.status === 404) return "Not found.";
  return `Something went wrong: ${err.message}`;
}

async function signIn(event) {
  event.preventDefault();
  const form = event.target;
  let user = form.user.value;
  if (user === "__other") user = $("other-user").value.trim();
  const scopes = [...form.querySelectorAll("input[name=scope]:checked")].map((i) => i.value);
  const resp = await fetch("/console/api/token", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user, scopes }),
  });
  let data = {};
  try { data = await resp.json(); } catch { /* not JSON */ }
  if (!resp.ok) { notice(`Sign-in failed: ${data.detail || resp.status}`, "error"); return; }
  session = { token: data.token, user: data.user, scopes: data.scopes };
  sessionStorage.setItem(KEY, JSON.stringify(session));
  await start();
}

async function start() {
  $("who-name").textContent = `signed in as ${session.user} (${session.scopes.join(" ") || "no scopes"})`;
  notice("");
  if (pendingFlow) await askToConfirm(); else await openApp();
}

async function openApp() {
  show("app");
  await listThreads();
  const wanted = threadFromUrl();
  if (wanted) await openThread(wanted);
  if (!$("app").hidden) $("message").focus();
}

function threadFromUrl() {
  const hash = new URLSearchParams(location.hash.slice(1));
  return hash.get("thread") || new URLSearchParams(location.search).get("thread");
}

// --- the confirm step of a connection (DESIGN.md §8): say what, for whom; Confirm or Cancel

function takeFlowFromUrl() {
  const params = new URLSearchParams(location.search);
  const flow = params.get("flow");
  const secret = params.get("confirm");
  // the one-time secret leaves the address bar (and the history entry) at once
  if (flow || secret) history.replaceState(null, "", `/console${location.hash}`);
  return flow && secret ? { flow, secret } : null;
}

function strong(text) {
  const b = document.createElement("strong");
  b.textContent = text;
  return b;
}

function confirmStep({ what, ask = false, result = "", failed = false, done = false }) {
  if (what !== undefined) $("confirm-what").replaceChildren(...[].concat(what));
  $("confirm-note").hidden = !ask;
  $("confirm-actions").hidden = !ask;
  $("confirm-yes").disabled = $("confirm-no").disabled = !ask;
  const r = $("confirm-result");
  r.textContent = result;
  r.className = failed ? "error" : "";
  r.hidden = !result;
  $("confirm-done").hidden = !done;
}

function refusal(err) {
  if (err.status === 404 && err.message === "Not Found") return "Not connected: this connect link is unknown or expired.";
  return `Not connected: ${err.message}`;
}

async function askToConfirm() {
  const { flow, secret } = pendingFlow;
  show("confirm");
  confirmStep({ what: "Checking the connect link…" });
  let info;
  try {
    info = await (await api("POST", `/console/api/flows/${encodeURIComponent(flow)}`, { confirm: secret })).json();
  } catch (err) {
    if (err.status === 401) return;  // signed out: the sign-in form asks again, the link waits
    pendingFlow = null;
    confirmStep({ what: "Nothing was connected.", result: refusal(err), failed: true, done: true });
    return;
  }
  const what = info.description ? ` (${info.description})` : "";
  confirmStep({ ask: true, what: ["Connect your ", strong(info.server), ` account${what} as `,
    strong(session.user), ", so that agents can use it on your behalf?"] });
  $("confirm-yes").focus();
}

async function confirmFlow() {
  if (!pendingFlow || !session) return;
  const { flow, secret } = pendingFlow;
  confirmStep({ ask: false });
  let out;
  try {
    out = await (await api("POST", `/oauth/flows/${encodeURIComponent(flow)}/confirm`, { confirm: secret })).json();
  } catch (err) {
    if (err.status === 401) return;  // not spent: sign in again, then confirm
    pendingFlow = null;  // one try: the server forgets the link whatever else it answered
    confirmStep({ result: refusal(err), failed: true, done: true });
    $("confirm-done").focus();
    return;
  }
  pendingFlow = null;
  confirmStep({ result: `Connected: ${out.server} is connected for ${session.user}. Go back to your thread and press Resume; you can close this tab.`, done: true });
  notice("Account connected. Go back to your thread and press Resume.");
  $("confirm-done").focus();
}

function cancelFlow() {
  pendingFlow = null;  // nothing was sent: the held connection expires unused
  confirmStep({ what: "Cancelled: nothing was connected.", done: true });
  $("confirm-done").focus();
}

// --- threads and the conversation

async function listThreads() {
  let threads = [];
  try {
    threads = await (await api("POST", "/threads/search", { limit: 50, sort_by: "updated_at", sort_order: "desc" })).json();
  } catch (err) { if (err.status !== 401) notice(explain(err), "error"); return; }
  const ul = $("threads");
  ul.replaceChildren();
  for (const t of threads) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = `#thread=${t.thread_id}`;
    a.dataset.thread = t.thread_id;
    a.textContent = (t.metadata && t.metadata.title) || `untitled (${t.thread_id.slice(0, 8)})`;
    if (t.thread_id === currentThread?.id) a.setAttribute("aria-current", "true");
    li.append(a);
    ul.append(li);
  }
}

function item(cls, text) {
  const li = document.createElement("li");
  li.className = cls;
  if (text !== undefined) li.textContent = text;
  $("log").append(li);
  li.scrollIntoView({ block: "nearest" });
  return li;
}

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((c) => (typeof c === "string" ? c : c.text || "")).join("");
  return "";
}

async function openThread(id) {
  $("log").replaceChildren();
  cards = {};
  currentThread = null;
  let thread;
  try {
    thread = await (await api("GET", `/threads/${encodeURIComponent(id)}`)).json();
  } catch (err) {
    if (err.status === 404) { $("thread-info").textContent = "Thread not found."; item("failure", "Thread not found."); }
    else if (err.status !== 401) notice(explain(err), "error");
    return;
  }
  currentThread = { id, graph: thread.metadata?.graph_id || "assistant" };
  $("thread-info").textContent = `thread ${id} · graph ${currentThread.graph}`;
  try {
    const state = await (await api("GET", `/threads/${encodeURIComponent(id)}/state`)).json();
    renderHistory(state.values?.messages || []);
    const pauses = (state.tasks || []).flatMap((task) => task.interrupts || []);
    if (pauses.length) pauseRunning();
    for (const i of pauses) renderInterrupt(i.value);
  } catch (err) { if (err.status !== 401) notice(explain(err), "error"); }
  for (const a of $("threads").querySelectorAll("a")) {
    if (a.dataset.thread === id) a.setAttribute("aria-current", "true"); else a.removeAttribute("aria-current");
  }
}

function renderHistory(messages) {
  for (const m of messages) {
    if (m.type === "human") item("human", textOf(m.content));
    else if (m.type === "ai") {
      if (textOf(m.content)) item("ai", textOf(m.content));
      for (const call of m.tool_calls || []) toolCard(call, false);
    } else if (m.type === "tool") finishCard(cards[m.tool_call_id], m);
  }
}

function span(cls, text = "") {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

// A tool card reads "<server> / <tool> / <outcome>": the server and the outcome come from the
// run's `mcp_tool` events. Before the first one "…"; a tool that is no MCP server's
// (connect_account, a graph's own) and a call of an earlier page load show no server.
function toolCard(call, live) {
  if (cards[call.id]) return cards[call.id];
  const li = item("tool");
  const head = document.createElement("div");
  head.className = "head";
  const server = span("server", "…");
  const where = span("where");
  where.append(server, " / ");
  const tool = span("name", call.name);
  const status = span("running", "running");
  const latency = span("dim");
  head.append(where, tool, " / ", status, latency);
  const args = document.createElement("pre");
  args.textContent = `args ${JSON.stringify(call.args || {})}`;
  const progress = document.createElement("div");
  progress.className = "dim";
  progress.hidden = true;
  const result = document.createElement("pre");
  li.append(head, args, progress, result);
  li.dataset.name = call.name;
  li.dataset.tool = call.name;
  const card = { li, where, server, tool, status, latency, result, progress, outcome: null };
  cards[call.id] = card;
  const known = learned()[call.id];
  if (known) nameServer(card, known);
  else where.hidden = !live;
  return card;
}

function nameServer(card, { server, tool }) {
  card.tool.textContent = tool;
  card.li.dataset.tool = tool;
  card.where.hidden = !server;  // a call that never reached a server (not allowed, expired)
  if (server) { card.server.textContent = server; card.li.dataset.server = server; }
}

function setStatus(card, outcome) {
  card.status.textContent = outcome;
  card.status.className = NOT_ENDED.has(outcome) ? outcome : ENDED_WELL.has(outcome) ? "ok" : "error";
  if (NOT_ENDED.has(outcome)) delete card.li.dataset.outcome; else card.li.dataset.outcome = outcome;
}

// What the `mcp_tool` events said about each call, kept for this tab (reloads included):
// the thread's messages do not say which server ran a call.
function learned() {
  try { return JSON.parse(sessionStorage.getItem(SERVERS_KEY) || "{}"); } catch { return {}; }
}

function learn(e) {
  const known = learned();
  known[e.tool_call_id] = { server: e.server, tool: e.tool };
  const ids = Object.keys(known);
  for (const id of ids.slice(0, Math.max(0, ids.length - 500))) delete known[id];
  sessionStorage.setItem(SERVERS_KEY, JSON.stringify(known));
}

function onToolEvent(e) {
  learn(e);
  const card = cards[e.tool_call_id];
  if (!card) return;
  nameServer(card, e);
  card.outcome = e.outcome === "running" ? null : e.outcome;
  setStatus(card, e.outcome);
  card.latency.textContent = typeof e.latency_ms === "number" ? ` · ${Math.round(e.latency_ms)} ms` : "";
  if (e.outcome === "running") card.progress.hidden = true;
}

function finishCard(card, msg) {
  if (!card) return;
  if (!card.li.dataset.server) card.where.hidden = true;  // no MCP server ran it
  setStatus(card, card.outcome || (msg.status === "error" ? "error" : "ok"));
  const text = textOf(msg.content);
  card.result.textContent = text.length > 600 ? `${text.slice(0, 600)}…` : text;
}

function pauseRunning() {  // the run paused for the user: its unfinished calls wait for the resume
  for (const card of Object.values(cards)) if (card.status.textContent === "running") setStatus(card, "paused");
  settleServers();
}

function settleServers() {  // no more events will come: a card still without a server has none
  for (const card of Object.values(cards)) if (!card.li.dataset.server) card.where.hidden = true;
}

function renderInterrupt(value) {
  if (value && value.type === "mcp_elicitation") { renderElicitation(value); return; }
  if (!value || !["connect_account", "reconnect_account", "grant_scopes"].includes(value.type)) {
    item("interrupt", `The run paused: ${JSON.stringify(value)}`);
    return;
  }
  const li = item("interrupt");
  const p = document.createElement("p");
  p.textContent = `${value.message || "Connect your account"} (server ${value.server})`;
  const connect = document.createElement("a");
  connect.textContent = value.type === "grant_scopes" ? "Allow" : "Connect";
  connect.target = "_blank";
  connect.rel = "noopener noreferrer";
  try {
    const url = new URL(value.connect_url);
    if (url.protocol === "https:" || url.protocol === "http:") connect.href = url.href;
  } catch { /* no usable link */ }
  const resume = document.createElement("button");
  resume.type = "button";
  resume.textContent = "Resume";
  resume.addEventListener("click", () => { li.remove(); run({ command: { resume: { connected: value.server } } }); });
  li.append(p, connect, " ", resume);
}

function renderElicitation(value) {  // an MCP server asks the user (DESIGN.md §8.1)
  const li = item("interrupt");
  const form = document.createElement("form");
  form.className = "elicitation";
  const head = document.createElement("p");
  head.textContent = `MCP server ${value.server} asks, for ${value.tool_name}:`;
  form.append(head);
  if (value.error) {
    const error = document.createElement("p");
    error.className = "error";
    error.setAttribute("role", "alert");
    error.textContent = value.error;
    form.append(error);
  }
  const readers = {};
  for (const request of value.requests || []) {
    const box = document.createElement("fieldset");
    box.dataset.key = request.key;
    const legend = document.createElement("legend");
    legend.textContent = request.message || "";
    box.append(legend);
    if (request.mode === "url") {
      const link = document.createElement("a");
      link.textContent = request.url;  // shown whole; the user opens it, never the console
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      try {
        const url = new URL(request.url);
        if (url.protocol === "https:" || url.protocol === "http:") link.href = url.href;
      } catch { /* shown, not linked */ }
      box.append(link);
      readers[request.key] = () => ({});
    } else {
      readers[request.key] = formFields(box, request.requested_schema || {});
    }
    form.append(box);
  }
  const actions = document.createElement("p");
  const visits = (value.requests || []).every((request) => request.mode === "url");
  for (const [action, label] of [["accept", visits ? "Accept" : "Send"], ["decline", "Decline"],
    ["cancel", "Cancel"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    if (action === "accept") button.className = "primary";
    button.addEventListener("click", () => {
      const responses = {};
      for (const request of value.requests || []) {
        const response = { action };
        if (action === "accept" && request.mode !== "url") response.content = readers[request.key]();
        responses[request.key] = response;
      }
      li.remove();
      run({ command: { resume: { responses } } });
    });
    actions.append(button, " ");
  }
  form.append(actions);
  form.addEventListener("submit", (event) => event.preventDefault());
  li.append(form);
}

function formFields(box, schema) {  // one input per field of the schema; returns the reader
  const required = new Set(schema.required || []);
  const read = {};
  for (const [name, field] of Object.entries(schema.properties || {})) {
    const label = document.createElement("label");
    label.textContent = `${field.title || name}${required.has(name) ? " *" : ""} `;
    let input;
    if (Array.isArray(field.enum)) {
      input = document.createElement("select");
      for (const option of field.enum) input.append(new Option(String(option), String(option)));
    } else {
      input = document.createElement("input");
      input.type = field.type === "boolean" ? "checkbox"
        : (field.type === "integer" || field.type === "number") ? "number" : "text";
      if (field.type !== "boolean" && field.default !== undefined) input.value = field.default;
      if (field.type === "boolean") input.checked = field.default === true;
    }
    input.name = name;
    if (field.description) input.title = field.description;
    label.append(input);
    box.append(label);
    read[name] = () => {
      if (field.type === "boolean") return input.checked;
      if (input.value === "") return undefined;  // left empty: missing (the server refuses it if required)
      if (field.type === "integer") return parseInt(input.value, 10);
      if (field.type === "number") return Number(input.value);
      if (field.type === "array") return input.value.split(",").map((v) => v.trim()).filter(Boolean);
      return input.value;
    };
  }
  return () => {
    const content = {};
    for (const [name, value] of Object.entries(read)) {
      const v = value();
      if (v !== undefined) content[name] = v;
    }
    return content;
  };
}

async function* sse(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      let parsed = null;
      try { parsed = JSON.parse(data.join("\n")); } catch { parsed = data.join("\n"); }
      yield { event, data: parsed };
    }
  }
}

async function newThread(event) {
  event.preventDefault();
  if (!session) return;
  const graph = $("graph").value;
  try {
    const t = await (await api("POST", "/threads", { metadata: { graph_id: graph } })).json();
    location.hash = `thread=${t.thread_id}`;
    currentThread = { id: t.thread_id, graph };
    cards = {};
    $("log").replaceChildren();
    $("thread-info").textContent = `thread ${t.thread_id} · graph ${graph}`;
    await listThreads();
    $("message").focus();
  } catch (err) { if (err.status !== 401) notice(explain(err), "error"); }
}

async function send(event) {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!session || !text || busy) return;
  if (!currentThread) {
    await newThread(new Event("submit"));
    if (!currentThread) return;
  }
  $("message").value = "";
  item("human", text);
  await run({ input: { messages: [{ role: "user", content: text }] } });
}

function setBusy(value) {
  busy = value;
  $("send").querySelector("button").disabled = value;  // typed text waits in the box
}

async function run(payload) {
  setBusy(true);
  let finished = false;
  const thread = currentThread;
  let answer = null;
  let answerId = null;
  try {
    const resp = await api("POST", `/threads/${encodeURIComponent(thread.id)}/runs/stream`, {
      assistant_id: thread.graph, ...payload,
      stream_mode: ["messages-tuple", "updates", "custom"],
    });
    for await (const { event, data } of sse(resp)) {
      if (currentThread !== thread) break;
      const mode = event.split("|")[0];
      if (mode === "messages") {
        const [chunk] = Array.isArray(data) ? data : [data];
        if (!chunk || !String(chunk.type || "").startsWith("AIMessage") && chunk.type !== "ai") continue;
        const t = textOf(chunk.content);
        if (!t) continue;
        if (!answer || answerId !== chunk.id) { answer = item("ai", ""); answerId = chunk.id; }
        answer.textContent += t;
      } else if (mode === "updates") {
        for (const [node, update] of Object.entries(data || {})) {
          if (node === "__interrupt__") {
            pauseRunning();
            for (const i of update || []) renderInterrupt(i.value);
            continue;
          }
          for (const m of (update && update.messages) || []) {
            if (m.type === "ai") {
              if (textOf(m.content) && answerId !== m.id) { answer = item("ai", textOf(m.content)); answerId = m.id; }
              for (const call of m.tool_calls || []) toolCard(call, true);
              answer = null; answerId = null;
            } else if (m.type === "tool") finishCard(cards[m.tool_call_id], m);
          }
        }
      } else if (mode === "custom") {
        if (data && data.type === "mcp_tool") onToolEvent(data);
        else if (data && data.type === "mcp_progress") {
          const card = Object.values(cards).reverse().find((c) => c.li.dataset.server === data.server
            && c.li.dataset.tool === data.tool && c.status.textContent === "running");
          const text = `${data.message || "working"} ${data.progress ?? ""}${data.total ? `/${data.total}` : ""}`;
          if (card) { card.progress.textContent = text; card.progress.hidden = false; }
          else item("dim", `${data.server} / ${data.tool}: ${text}`);
        }
      } else if (mode === "error") {
        item("failure", `The run failed: ${data?.message || data?.error || JSON.stringify(data)}`);
      }
    }
    finished = true;
    settleServers();
  } catch (err) {
    if (err.status === 404) item("failure", "Thread not found.");
    else if (err.status !== 401) item("failure", explain(err));
  } finally {
    setBusy(false);
  }
  if (finished) title(thread);  // a nicety, off the busy path: the next message need not wait
}

async function title(thread) {
  try {
    const state = await (await api("GET", `/threads/${encodeURIComponent(thread.id)}/state`)).json();
    const messages = (state.values?.messages || []).filter((m) => m.type === "human" || m.type === "ai")
      .map((m) => ({ role: m.type === "human" ? "user" : "assistant", content: textOf(m.content) }));
    if (!messages.length) return;
    const out = await (await api("POST", "/runs/wait", { assistant_id: "thread_title", input: { messages } })).json();
    if (out && typeof out.title === "string" && out.title) {
      await api("PATCH", `/threads/${encodeURIComponent(thread.id)}`, { metadata: { title: out.title } });
      await listThreads();
    }
  } catch { /* a title is a nicety */ }
}

window.addEventListener("hashchange", () => { const id = threadFromUrl(); if (session && id && id !== currentThread?.id) openThread(id); });
$("signin-form").addEventListener("submit", (e) => { signIn(e).catch((err) => notice(explain(err), "error")); });
$("signout").addEventListener("click", () => { history.replaceState(null, "", "/console"); signOut(); });
$("new-thread").addEventListener("submit", newThread);
$("send").addEventListener("submit", send);
$("other-user").addEventListener("focus", () => { document.querySelector("input[value=__other]").checked = true; });
$("confirm-yes").addEventListener("click", () => { confirmFlow(); });
$("confirm-no").addEventListener("click", cancelFlow);
$("confirm-done").addEventListener("click", () => { notice(""); openApp(); });
if (loadSession()) start(); else signOut();
