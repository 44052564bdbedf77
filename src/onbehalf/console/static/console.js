// onbehalf dev console (DESIGN.md §9). The token lives in sessionStorage only and is sent
// only as the Authorization header; never in a URL, a cookie or a request body.
const KEY = "onbehalf.console.session";
const $ = (id) => document.getElementById(id);
let session = null;
let toolServer = {};
let currentThread = null;
let busy = false;

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

function signOut(message) {
  sessionStorage.removeItem(KEY);
  session = null;
  currentThread = null;
  $("log").replaceChildren();
  $("threads").replaceChildren();
  $("thread-info").textContent = "";
  $("app").hidden = true;
  $("who").hidden = true;
  $("signin").hidden = false;
  notice(message || "", message ? "error" : "info");
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (session) headers.Authorization = `Bearer ${session.token}`;
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
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  $("who-name").textContent = `signed in as ${session.user} (${session.scopes.join(" ") || "no scopes"})`;
  notice("");
  await loadServers();
  const params = new URLSearchParams(location.search);
  if (params.get("flow") && params.get("confirm")) await confirmFlow(params.get("flow"), params.get("confirm"));
  await listThreads();
  const wanted = threadFromUrl();
  if (wanted) await openThread(wanted);
}

function threadFromUrl() {
  const hash = new URLSearchParams(location.hash.slice(1));
  return hash.get("thread") || new URLSearchParams(location.search).get("thread");
}

async function loadServers() {
  toolServer = {};
  try {
    const data = await (await fetch("/console/api/servers")).json();
    for (const [name, cfg] of Object.entries(data.servers || {})) {
      for (const tool of cfg.tools || []) toolServer[tool] = name;
      toolServer[`__server:${name}`] = name;
    }
  } catch { /* cards then show the server as unknown */ }
}

function serverOf(tool) {
  if (toolServer[tool]) return toolServer[tool];
  for (const key of Object.keys(toolServer)) {
    const name = key.startsWith("__server:") ? key.slice(9) : null;
    if (name && tool.startsWith(`${name}_`)) return name;
  }
  const names = Object.keys(toolServer).filter((k) => k.startsWith("__server:"));
  return names.length === 1 ? names[0].slice(9) : "?";
}

async function confirmFlow(flow, secret) {
  history.replaceState(null, "", "/console");  // the secret leaves the address bar at once
  try {
    await api("POST", `/oauth/flows/${encodeURIComponent(flow)}/confirm`, { confirm: secret });
    notice("Account connected. Go back to your thread and press Resume.");
  } catch (err) {
    if (err.status === 404) notice("This connect link is unknown or expired (or this server has no OAuth routes yet).", "error");
    else if (err.status === 403) notice("This connect link was started by another user: nothing was stored.", "error");
    else if (err.status !== 401) notice(explain(err), "error");
  }
}

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
    for (const task of state.tasks || []) for (const i of task.interrupts || []) renderInterrupt(i.value);
  } catch (err) { if (err.status !== 401) notice(explain(err), "error"); }
  for (const a of $("threads").querySelectorAll("a")) {
    if (a.dataset.thread === id) a.setAttribute("aria-current", "true"); else a.removeAttribute("aria-current");
  }
}

function renderHistory(messages) {
  const cards = {};
  for (const m of messages) {
    if (m.type === "human") item("human", textOf(m.content));
    else if (m.type === "ai") {
      if (textOf(m.content)) item("ai", textOf(m.content));
      for (const call of m.tool_calls || []) cards[call.id] = toolCard(call);
    } else if (m.type === "tool") finishCard(cards[m.tool_call_id], m);
  }
}

function toolCard(call) {
  const li = item("tool");
  const head = document.createElement("div");
  head.className = "head";
  const server = serverOf(call.name);
  head.append(`${server} / ${call.name} / `);
  const status = document.createElement("span");
  status.className = "running";
  status.textContent = "running";
  head.append(status);
  const latency = document.createElement("span");
  latency.className = "dim";
  head.append(latency);
  const args = document.createElement("pre");
  args.textContent = `args ${JSON.stringify(call.args || {})}`;
  const progress = document.createElement("div");
  progress.className = "dim";
  const result = document.createElement("pre");
  li.append(head, args, progress, result);
  li.dataset.tool = call.name;
  li.dataset.server = server;
  return { li, status, latency, result, progress, started: performance.now(), name: call.name };
}

function finishCard(card, msg) {
  if (!card) return;
  const failed = msg.status === "error";
  card.status.className = failed ? "error" : "ok";
  card.status.textContent = failed ? "error" : "ok";
  card.li.dataset.outcome = card.status.textContent;
  if (card.live) card.latency.textContent = ` · ${Math.round(performance.now() - card.started)} ms`;
  const text = textOf(msg.content);
  card.result.textContent = text.length > 600 ? `${text.slice(0, 600)}…` : text;
}

function renderInterrupt(value) {
  if (!value || !["connect_account", "reconnect_account"].includes(value.type)) {
    item("interrupt", `The run paused: ${JSON.stringify(value)}`);
    return;
  }
  const li = item("interrupt");
  const p = document.createElement("p");
  p.textContent = `${value.message || "Connect your account"} (server ${value.server})`;
  const connect = document.createElement("a");
  connect.textContent = "Connect";
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
  const graph = $("graph").value;
  try {
    const t = await (await api("POST", "/threads", { metadata: { graph_id: graph } })).json();
    location.hash = `thread=${t.thread_id}`;
    currentThread = { id: t.thread_id, graph };
    $("log").replaceChildren();
    $("thread-info").textContent = `thread ${t.thread_id} · graph ${graph}`;
    await listThreads();
    $("message").focus();
  } catch (err) { if (err.status !== 401) notice(explain(err), "error"); }
}

async function send(event) {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || busy) return;
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
  const cards = {};
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
          if (node === "__interrupt__") { for (const i of update || []) renderInterrupt(i.value); continue; }
          for (const m of (update && update.messages) || []) {
            if (m.type === "ai") {
              if (textOf(m.content) && answerId !== m.id) { answer = item("ai", textOf(m.content)); answerId = m.id; }
              for (const call of m.tool_calls || []) { cards[call.id] = toolCard(call); cards[call.id].live = true; }
              answer = null; answerId = null;
            } else if (m.type === "tool") finishCard(cards[m.tool_call_id], m);
          }
        }
      } else if (mode === "custom") {
        if (data && data.type === "mcp_progress") {
          const card = Object.values(cards).reverse().find((c) => c.name === data.tool);
          const text = `${data.message || "working"} ${data.progress ?? ""}${data.total ? `/${data.total}` : ""}`;
          if (card) card.progress.textContent = text; else item("dim", `${data.server}/${data.tool}: ${text}`);
        }
      } else if (mode === "error") {
        item("failure", `The run failed: ${data?.message || data?.error || JSON.stringify(data)}`);
      }
    }
    finished = true;
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
if (loadSession()) start(); else signOut();
