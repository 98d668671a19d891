// tests/clients/twilio.mjs — the gateway and the mock provider seen through Twilio's official Node.js helper library
// (npm "twilio"), not through our own idea of Twilio: its request signer signs the webhooks we send the gateway, its
// REST client sends a message through the mock provider, and its validator checks the status callbacks the mock
// posts. Prints one JSON line per check ({"ok":bool,"what":...,"detail":...}), then {"end":true};
// tests/integration/test_client_libraries.py starts the gateway and the mock, makes the tenant and turns them into TAP.
//
//   SB_URL=... SB_KEY=... SB_TOKEN=... SB_SMS=<channel id> SB_SMS_NUMBER=... SB_WA=<channel id> SB_WA_NUMBER=...
//   SB_MOCK=http://127.0.0.1:PORT node tests/clients/twilio.mjs
import http from "node:http";
import { randomBytes } from "node:crypto";
import twilio from "twilio";

const env = process.env;
const base = env.SB_URL;
const token = env.SB_TOKEN;
const check = (ok, what, detail) => console.log(JSON.stringify({ ok: !!ok, what, detail: detail ?? null }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sid = (prefix) => prefix + randomBytes(16).toString("hex");

// POSTs params as Twilio does, signed by the official library for signedUrl (the URL the request goes to, unless a
// test signs another on purpose). Answers {status, type, body}.
async function post(path, params, signedUrl = base + path) {
  const signature = twilio.getExpectedTwilioSignature(token, signedUrl, params);
  const r = await fetch(base + path, { method: "POST", body: new URLSearchParams(params),
                                       headers: { "X-Twilio-Signature": signature } });
  return { status: r.status, type: r.headers.get("content-type"), body: await r.text() };
}

async function api(path, init = {}) {
  const r = await fetch(base + path, { ...init, headers: { Authorization: "Bearer " + env.SB_KEY,
                                                           "Content-Type": "application/json" } });
  return { status: r.status, json: await r.json().catch(() => null) };
}

// Polls until fn() answers something truthy (10 s).
async function until(fn) {
  for (let i = 0; i < 100; i++) {
    const v = await fn();
    if (v) return v;
    await sleep(100);
  }
  return null;
}

async function createdEvent(providerId) {
  return until(async () => {
    const r = await api("/v1/events?after=0&limit=1000");
    return (r.json?.events || []).find((e) => e.type === "message.created" && e.data.provider_id === providerId);
  });
}

// ---- inbound webhooks, signed by the library ---------------------------------------------------------------------

{
  const smsSid = sid("SM");
  const params = { MessageSid: smsSid, SmsSid: smsSid, AccountSid: "AC" + "3".repeat(32), From: "+14155550199",
                   To: env.SB_SMS_NUMBER, Body: "Olá from the helper library ✓ 👋", NumMedia: "0", NumSegments: "1",
                   ApiVersion: "2010-04-01" };
  const r = await post(`/webhooks/twilio/${env.SB_SMS}`, params);
  check(r.status === 200 && /text\/xml/.test(r.type || "") && r.body.includes("<Response"),
        "an inbound SMS signed by twilio.getExpectedTwilioSignature is answered 200 TwiML", r);
  const e = await createdEvent(smsSid);
  check(e && e.data.body === params.Body && e.data.from === params.From && e.data.direction === "in",
        "and reaches the event log with its Unicode body intact", e);

  const forged = await post(`/webhooks/twilio/${env.SB_SMS}`, { ...params, MessageSid: sid("SM") },
                            `${base}/webhooks/twilio/${env.SB_WA}`);
  check(forged.status === 403, "the same request signed for another channel's URL is refused 403", forged.status);
}

{
  const waSid = sid("SM");
  const params = { MessageSid: waSid, SmsMessageSid: waSid, AccountSid: "AC" + "3".repeat(32),
                   From: "whatsapp:+5511987650000", To: "whatsapp:" + env.SB_WA_NUMBER, Body: "foto 📷",
                   ProfileName: "Zoë", WaId: "5511987650000", NumMedia: "1",
                   MediaUrl0: "https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME1",
                   MediaContentType0: "image/jpeg", ApiVersion: "2010-04-01" };
  const r = await post(`/webhooks/twilio/${env.SB_WA}`, params);
  check(r.status === 200, "an inbound WhatsApp message with media, signed by the library, is answered 200", r);
  const e = await createdEvent(waSid);
  check(e && e.data.body === params.Body && (e.data.media || []).length === 1 &&
        e.data.media[0].url === params.MediaUrl0,
        "and reaches the event log with its media", e);
}

// ---- an outbound message, then a status callback signed by the library -------------------------------------------

{
  const sent = await api("/v1/messages", { method: "POST",
    body: JSON.stringify({ channel_id: env.SB_SMS, to: "+14155550177", body: "reply",
                           idempotency_key: sid("k") }) });
  check(sent.status === 202, "POST /v1/messages is accepted", sent);
  const m = sent.json && await until(async () => {
    const r = await api(`/v1/messages/${sent.json.id}`);
    return r.json?.provider_id && r.json.status === "sent" ? r.json : null;
  });
  check(m, "the message reaches the mock provider and is sent", m);
  if (m) {
    const cb = { MessageSid: m.provider_id, SmsSid: m.provider_id, AccountSid: "AC" + "3".repeat(32),
                 MessageStatus: "delivered", SmsStatus: "delivered", To: "+14155550177", From: env.SB_SMS_NUMBER,
                 ApiVersion: "2010-04-01" };
    const r = await post(`/webhooks/twilio/${env.SB_SMS}/status`, cb);
    check(r.status === 200, "a status callback signed by the library is answered 200", r);
    const d = await until(async () => {
      const x = await api(`/v1/messages/${m.id}`);
      return x.json?.status === "delivered" ? x.json : null;
    });
    check(d, "and the message becomes delivered", d);
  }
}

// ---- the mock provider through the official REST client, its callbacks through the official validator -----------

{
  const account = "AC" + "5".repeat(32);
  const from = "+1555" + String(Date.now() % 10 ** 7).padStart(7, "0");
  const callbacks = [];
  const receiver = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      callbacks.push({ signature: req.headers["x-twilio-signature"],
                       params: Object.fromEntries(new URLSearchParams(body)) });
      res.end();
    });
  });
  await new Promise((r) => receiver.listen(0, "127.0.0.1", r));
  const callbackUrl = `http://127.0.0.1:${receiver.address().port}/status?tag=1`;
  try {
    await fetch(env.SB_MOCK + "/_mock/behaviour", { method: "POST",
      body: JSON.stringify({ sender: from, callbacks: ["sent", "delivered"] }) });
    const client = twilio(account, token);
    client.api.baseUrl = env.SB_MOCK; // the library's host, pointed at the mock as twilio_api_base points the gateway
    let msg = null, err = null;
    try {
      msg = await client.messages.create({ to: "+14155550188", from, body: "héllo", statusCallback: callbackUrl });
    } catch (e) {
      err = String(e);
    }
    check(msg && /^SM[0-9a-f]{32}$/.test(msg.sid) && msg.status === "queued" && msg.body === "héllo",
          "the official REST client sends through the mock provider (messages.create)", msg ? msg.toJSON() : err);
    await until(async () => callbacks.length >= 2);
    check(callbacks.map((c) => c.params.MessageStatus).join(",") === "sent,delivered" &&
          callbacks.every((c) => c.params.MessageSid === msg?.sid),
          "the mock posts the sent and delivered callbacks for it", callbacks.map((c) => c.params));
    check(callbacks.length >= 2 && callbacks.every((c) => twilio.validateRequest(token, c.signature || "",
                                                                                 callbackUrl, c.params)),
          "each callback passes twilio.validateRequest", callbacks.map((c) => c.signature));
    check(callbacks.length >= 1 && !twilio.validateRequest(token, callbacks[0].signature || "", callbackUrl,
                                                           { ...callbacks[0].params, MessageStatus: "failed" }),
          "and a callback with a changed parameter does not");
    let refused = null;
    try {
      await client.messages.create({ to: "+14155550188", from });
    } catch (e) {
      refused = e;
    }
    check(refused && refused.status === 400 && refused.code === 21602,
          "a send with neither Body nor MediaUrl fails in the library as Twilio's error 21602 (status 400)",
          refused ? { status: refused.status, code: refused.code, message: refused.message } : null);
  } finally {
    receiver.close();
  }
}

console.log(JSON.stringify({ end: true })); // the wrapper checks that the script got this far
