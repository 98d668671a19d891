// The Switchboard inbox page: sign in with an API key (traded for a one-hour token, the key is not kept), list the
// tenant's conversations (channel, last message, unread count), watch messages and calls arrive live over the inbox
// WebSocket (resuming from the last cursor after a reconnect), reply, and watch each reply's ticks (sent, delivered,
// read). Plain DOM, no framework, no build step; everything from the network is put on the page as text, never as
// HTML. A token that expires or is refused signs the page out, once, with a message: the page never reloads itself.
"use strict";

const $ = (sel) => document.querySelector(sel);
const CHANNELS = {
  twilio_sms: "SMS", twilio_whatsapp: "WhatsApp", meta_whatsapp: "WhatsApp", meta_messenger: "Messenger",
  meta_instagram: "Instagram", twilio_voice: "Voice", linked: "Linked",
};
const MAX_CALLS = 5;     // calls listed at once, newest first
const FOLLOW_PX = 80;    // a message list scrolled to within this of its end follows new messages

const state = {
  token: sessionStorage.getItem("sb.token"),
  expires: Number(sessionStorage.getItem("sb.expires") || 0), // ms since the epoch; 0: unknown
  cursor: Number(sessionStorage.getItem("sb.cursor") || 0),
  conversations: new Map(), // id -> conversation (+ unread, last)
  messages: new Map(),      // conversation id -> Map(message id -> message)
  calls: new Map(),         // call id -> call
  current: null,
  ws: null,
  retry: 500,
  expiry: null,             // the timer that signs out when the token expires
};

class HttpError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + (options.key || state.token) }, options.headers || {});
  return fetch(path, Object.assign({}, options, { headers })).then(async (r) => {
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new HttpError((body.error && body.error.message) || r.statusText, r.status);
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
    state.expires = t.expires_at ? t.expires_at * 1000 : 0;
    state.cursor = 0;
    sessionStorage.setItem("sb.token", t.token);
    sessionStorage.setItem("sb.expires", String(state.expires));
    sessionStorage.removeItem("sb.cursor");
    start();
  } catch (e) {
    $("#signin-error").textContent = e.status === 401 ? "That key was not accepted." : "Sign-in failed: " + e.message;
  }
}

// Back to the sign-in card, forgetting the token and everything shown with it. why, when given, says what happened.
function signOut(why) {
  sessionStorage.clear();
  clearTimeout(state.expiry);
  Object.assign(state, { token: null, expires: 0, cursor: 0, current: null, retry: 500, expiry: null });
  state.conversations.clear();
  state.messages.clear();
  state.calls.clear();
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close(1000);
  $("#conversations").replaceChildren();
  $("#messages").replaceChildren();
  $("#calls").replaceChildren();
  $("#calls-panel").hidden = true;
  $("#title").textContent = "Pick a conversation";
  $("#reply").hidden = true;
  $("#inbox").hidden = true;
  $("#signout").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = typeof why === "string" ? why : "";
  setState("signed out");
  $("#key").focus();
}

const expired = () => signOut("Your session expired. Sign in again.");

// ---- conversations -----------------------------------------------------------------------------------------------

function who(c) {
  return (c.contact && (c.contact.profile_name || c.contact.address)) || "conversation " + c.id;
}

function channelLabel(c) {
  const el = document.createElement("span");
  el.className = "channel " + (c.channel_type || "");
  el.textContent = CHANNELS[c.channel_type] || "channel " + c.channel_id;
  return el;
}

function span(cls, text) {
  const el = document.createElement("span");
  el.className = cls;
  el.textContent = text;
  return el;
}

function when(iso, withDate) {
  if (!iso) return "";
  const d = new Date(iso);
  return withDate && d.toDateString() !== new Date().toDateString() ? d.toLocaleDateString()
    : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function renderConversations() {
  const items = [...state.conversations.values()].sort((a, b) =>
    String(b.last_message_at || b.created_at || "").localeCompare(String(a.last_message_at || a.created_at || "")) ||
    Number(b.id) - Number(a.id));
  $("#conversations").replaceChildren(...items.map((c) => {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    li.classList.toggle("current", c.id === state.current);
    const name = span("who", "");
    name.append(channelLabel(c), who(c));
    const last = c.last ? (c.last.direction === "out" ? "You: " : "") + (c.last.body || "[media]") : "";
    li.append(name, span("when", when(c.last_message_at, true)), span("last", last),
              span("unread", c.unread ? String(c.unread) : ""));
    li.querySelector(".unread").setAttribute("aria-label", c.unread ? c.unread + " unread" : "");
    li.addEventListener("click", () => openConversation(c.id));
    return li;
  }));
  $("#no-conversations").hidden = items.length > 0;
}

function updateConversation(c) {
  const known = state.conversations.get(c.id) || { unread: 0, last: null };
  if (c.last_message) known.last = c.last_message;
  delete c.last_message;
  state.conversations.set(c.id, Object.assign(known, c));
}

async function loadConversations() {
  const r = await api("/v1/conversations?limit=100");
  for (const c of r.conversations) updateConversation(c);
  renderConversations();
}

// ---- messages ----------------------------------------------------------------------------------------------------

// Oldest first: by seq within the conversation, else by time, else by id.
function byPlace(a, b) {
  if (a.seq && b.seq && a.seq !== b.seq) return a.seq - b.seq;
  const ta = Date.parse(a.created_at) || 0, tb = Date.parse(b.created_at) || 0;
  return ta - tb || Number(a.id) - Number(b.id);
}

function renderMessages(follow) {
  const list = $("#messages");
  const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight <= FOLLOW_PX;
  const msgs = state.current ? [...(state.messages.get(state.current) || new Map()).values()] : [];
  msgs.sort(byPlace);
  list.replaceChildren(...msgs.map((m) => {
    const li = document.createElement("li");
    li.className = "msg " + m.direction;
    li.dataset.id = m.id;
    if (m.direction === "out") li.dataset.status = m.status || "";
    li.textContent = m.body || (m.media && m.media.length ? "[media]" : "");
    const meta = span("meta", "");
    meta.append(span("when", when(m.created_at)));
    if (m.direction === "out") {
      meta.append(span("ticks", ""), span("status " + (m.status || ""), m.status || ""));
      meta.querySelector(".ticks").setAttribute("aria-hidden", "true");
    }
    li.append(meta);
    return li;
  }));
  if (follow || atEnd) list.scrollTop = list.scrollHeight;
}

function keep(m) {
  if (!state.messages.has(m.conversation_id)) state.messages.set(m.conversation_id, new Map());
  const known = state.messages.get(m.conversation_id).get(m.id) || {};
  state.messages.get(m.conversation_id).set(m.id, Object.assign(known, m));
}

async function openConversation(id) {
  state.current = id;
  const c = state.conversations.get(id);
  if (c) c.unread = 0;
  const title = $("#title");
  title.replaceChildren();
  if (c) title.append(channelLabel(c), who(c));
  else title.textContent = "Conversation";
  $("#reply").hidden = false;
  renderConversations();
  renderMessages(true);
  try {
    const r = await api("/v1/conversations/" + encodeURIComponent(id) + "/messages?limit=100");
    for (const m of r.messages) keep(m);
  } catch (e) {
    if (e.status === 401) return expired();
  }
  if (state.current === id) renderMessages(true);
  $("#body").focus();
}

// ---- calls -------------------------------------------------------------------------------------------------------

function callState(k) {
  if (k.phase === "rejected") return "rejected" + (k.cap ? " (" + k.cap + " cap)" : "");
  if (k.phase === "ended") {
    const s = k.duration_s;
    return "ended" + (s != null ? " · " + Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0") : "");
  }
  return k.status === "in-progress" ? "in progress" : k.status || "ringing";
}

function renderCalls() {
  const calls = [...state.calls.values()].sort((a, b) => b.seen - a.seen).slice(0, MAX_CALLS);
  $("#calls").replaceChildren(...calls.map((k) => {
    const li = document.createElement("li");
    li.dataset.id = k.id;
    li.className = "call " + (k.phase === "ended" || k.phase === "rejected" ? k.phase : "live");
    const name = span("who", (k.direction === "outbound" ? "To " : "From ") +
                      ((k.direction === "outbound" ? k.to : k.from) || "unknown"));
    li.append(name, span("call-state", callState(k)));
    return li;
  }));
  $("#calls-panel").hidden = calls.length === 0;
}

function onCall(type, d) {
  const k = state.calls.get(d.id) || { id: d.id, seen: Date.now() };
  for (const f of ["channel_id", "call_sid", "direction", "status", "from", "to", "cap", "duration_s", "ended_by",
                   "reason"]) {
    if (d[f] !== undefined && d[f] !== null) k[f] = d[f];
  }
  if (type === "call.ended") k.phase = "ended";
  else if (type === "call.rejected") k.phase = "rejected";
  else if (!k.phase) k.phase = "live";
  state.calls.set(d.id, k);
  renderCalls();
}

// ---- the live inbox ----------------------------------------------------------------------------------------------

function onEvent(ev) {
  state.cursor = ev.cursor;
  sessionStorage.setItem("sb.cursor", String(ev.cursor));
  const d = ev.data;
  if (ev.type === "message.created") {
    keep(d);
    const c = state.conversations.get(d.conversation_id);
    if (c) {
      c.last = { body: d.body, direction: d.direction };
      if (d.direction === "in" && (d.conversation_id !== state.current || document.hidden)) c.unread += 1;
      renderConversations();
    }
    if (d.conversation_id === state.current) renderMessages(d.direction === "out");
  } else if (ev.type === "conversation.updated") {
    const fresh = !state.conversations.has(d.id);
    updateConversation(d);
    if (fresh) { // its message.created came first: count it now
      const msgs = [...(state.messages.get(d.id) || new Map()).values()].sort(byPlace);
      const last = msgs[msgs.length - 1];
      const c = state.conversations.get(d.id);
      if (last) c.last = { body: last.body, direction: last.direction };
      c.unread = msgs.filter((m) => m.direction === "in").length;
    }
    renderConversations();
  } else if (ev.type === "message.status") {
    for (const msgs of state.messages.values()) {
      if (msgs.has(d.id)) msgs.get(d.id).status = d.status;
    }
    renderMessages(false);
  } else if (ev.type.startsWith("call.")) {
    onCall(ev.type, d);
  }
}

function connect() {
  if (state.expires && Date.now() >= state.expires) return expired();
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
    if (state.ws !== ws) return;
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
    if (e.code === 4401) return expired(); // the token expired or was revoked: sign in again, no retry
    setState("reconnecting…");
    setTimeout(() => state.token && !state.ws && connect(), state.retry);
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
  if (state.expires && Date.now() >= state.expires) return expired();
  $("#signin").hidden = true;
  $("#signin-error").textContent = "";
  $("#inbox").hidden = false;
  $("#signout").hidden = false;
  clearTimeout(state.expiry);
  if (state.expires) state.expiry = setTimeout(expired, Math.min(state.expires - Date.now(), 2 ** 31 - 1));
  try {
    await loadConversations();
  } catch (e) {
    if (e.status === 401) return expired();
  }
  if (state.token && !state.ws) connect();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#signin").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", () => signOut());
  $("#reply").addEventListener("submit", reply);
  $("#body").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("#reply").requestSubmit(); }
  });
  if (state.token) start();
  else $("#key").focus();
});
