// The Switchboard inbox page: sign in with an API key (traded for a one-hour token, the key is not kept), list the
// tenant's conversations, watch messages arrive live over the inbox WebSocket (resuming from the last cursor after
// a reconnect), reply, and watch each message's status change. Plain DOM, no framework, no build step; everything
// from the network is put on the page as text, never as HTML.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  token: sessionStorage.getItem("sb.token"),
  cursor: Number(sessionStorage.getItem("sb.cursor") || 0),
  conversations: new Map(), // id -> conversation
  messages: new Map(),      // conversation id -> Map(message id -> message)
  current: null,
  ws: null,
  retry: 500,
};

function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + (options.key || state.token) }, options.headers || {});
  return fetch(path, Object.assign({}, options, { headers })).then(async (r) => {
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw Object.assign(new Error((body.error && body.error.message) || r.statusText), { status: r.status });
    return body;
  });
}

function setState(text, live) {
  const el = $("#state");
  el.textContent = text;
  el.classList.toggle("live", !!live);
}

// ---- signing in and out ------------------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const key = $("#key").value.trim();
  $("#signin-error").textContent = "";
  try {
    const t = await api("/v1/tokens", {
      method: "POST", key, headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ttl_s: 3600 }),
    });
    $("#key").value = "";
    state.token = t.token;
    sessionStorage.setItem("sb.token", t.token);
    start();
  } catch (e) {
    $("#signin-error").textContent = e.status === 401 ? "That key was not accepted." : "Sign-in failed: " + e.message;
  }
}

function signOut() {
  sessionStorage.clear();
  state.token = null;
  state.cursor = 0;
  if (state.ws) state.ws.close(1000);
  state.ws = null;
  $("#inbox").hidden = true;
  $("#signin").hidden = false;
  $("#signout").hidden = true;
  setState("signed out");
}

// ---- conversations and messages ----------------------------------------------------------------------------------

function who(c) {
  return (c.contact && (c.contact.profile_name || c.contact.address)) || "conversation " + c.id;
}

function renderConversations() {
  const list = $("#conversations");
  const items = [...state.conversations.values()].sort((a, b) =>
    String(b.last_message_at || "").localeCompare(String(a.last_message_at || "")));
  list.replaceChildren(...items.map((c) => {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    li.classList.toggle("current", c.id === state.current);
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = who(c);
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = c.last_message_at ? new Date(c.last_message_at).toLocaleString() : "";
    li.append(name, when);
    li.addEventListener("click", () => openConversation(c.id));
    return li;
  }));
}

function renderMessages() {
  const list = $("#messages");
  const msgs = state.current ? [...(state.messages.get(state.current) || new Map()).values()] : [];
  msgs.sort((a, b) => (a.seq || 0) - (b.seq || 0) || String(a.created_at).localeCompare(String(b.created_at)));
  list.replaceChildren(...msgs.map((m) => {
    const li = document.createElement("li");
    li.className = "msg " + m.direction;
    li.dataset.id = m.id;
    li.textContent = m.body || (m.media && m.media.length ? "[media]" : "");
    const meta = document.createElement("span");
    meta.className = "meta";
    const status = document.createElement("span");
    status.className = "status " + (m.status || "");
    status.textContent = m.direction === "out" ? m.status || "" : "";
    meta.append(new Date(m.created_at).toLocaleTimeString() + " ", status);
    li.append(meta);
    return li;
  }));
  list.scrollTop = list.scrollHeight;
}

function keep(m) {
  if (!state.messages.has(m.conversation_id)) state.messages.set(m.conversation_id, new Map());
  const known = state.messages.get(m.conversation_id).get(m.id) || {};
  state.messages.get(m.conversation_id).set(m.id, Object.assign(known, m));
}

async function loadConversations() {
  const r = await api("/v1/conversations?limit=100");
  for (const c of r.conversations) state.conversations.set(c.id, c);
  renderConversations();
}

async function openConversation(id) {
  state.current = id;
  const c = state.conversations.get(id);
  $("#title").textContent = c ? who(c) : "Conversation";
  $("#reply").hidden = false;
  renderConversations();
  const r = await api("/v1/conversations/" + encodeURIComponent(id) + "/messages?limit=100");
  for (const m of r.messages) keep(m);
  renderMessages();
}

// ---- the live inbox ----------------------------------------------------------------------------------------------

function onEvent(ev) {
  state.cursor = ev.cursor;
  sessionStorage.setItem("sb.cursor", String(ev.cursor));
  const d = ev.data;
  if (ev.type === "message.created") {
    keep(d);
    if (d.conversation_id === state.current) renderMessages();
  } else if (ev.type === "conversation.updated") {
    state.conversations.set(d.id, Object.assign(state.conversations.get(d.id) || {}, d));
    renderConversations();
  } else if (ev.type === "message.status") {
    for (const msgs of state.messages.values()) {
      if (msgs.has(d.id)) msgs.get(d.id).status = d.status;
    }
    renderMessages();
  }
}

function connect() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/inbox";
  const ws = new WebSocket(url, "switchboard.v1.json");
  state.ws = ws;
  setState("connecting…");
  ws.onopen = () => {
    const hello = { op: "hello", token: state.token };
    if (state.cursor > 0) hello.resume_after = state.cursor;
    ws.send(JSON.stringify(hello));
  };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.op === "welcome") {
      state.retry = 500;
      if (!state.cursor) state.cursor = m.cursor;
      setState("live", true);
    } else if (m.op === "event") {
      onEvent(m);
    } else if (m.op === "error") {
      $("#reply-error").textContent = m.message;
    }
  };
  ws.onclose = (e) => {
    if (state.ws !== ws) return;
    state.ws = null;
    if (e.code === 4401) return signOut(); // the token expired or was refused: sign in again
    setState("reconnecting…");
    setTimeout(() => state.token && connect(), state.retry);
    state.retry = Math.min(state.retry * 2, 10000);
  };
}

function reply(event) {
  event.preventDefault();
  const c = state.conversations.get(state.current);
  const body = $("#body").value;
  if (!c || !body.trim() || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  $("#reply-error").textContent = "";
  state.ws.send(JSON.stringify({
    op: "send", channel_id: c.channel_id, to: c.contact.address, body, idempotency_key: crypto.randomUUID(),
  }));
  $("#body").value = "";
}

async function start() {
  $("#signin").hidden = true;
  $("#inbox").hidden = false;
  $("#signout").hidden = false;
  try {
    await loadConversations();
  } catch (e) {
    if (e.status === 401) return signOut();
  }
  connect();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#signin").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", signOut);
  $("#reply").addEventListener("submit", reply);
  if (state.token) start();
});
