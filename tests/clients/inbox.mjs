// tests/clients/inbox.mjs — the live inbox (WebSocket /v1/inbox) through widely used client libraries rather than
// our own: the npm "ws" WebSocket client, and "@msgpack/msgpack" to encode and decode the binary subprotocol. A JSON
// client and a msgpack client watch the same tenant; a webhook signed by Twilio's helper library must reach both as
// the same event; then ping, WebSocket ping, `send`, resume from a cursor, and a bad token. Prints one JSON line per
// check ({"ok":bool,"what":...,"detail":...}), then {"end":true}; tests/integration/test_client_libraries.py runs it.
//
//   SB_URL=... SB_KEY=... SB_TOKEN=... SB_SMS=<channel id> SB_SMS_NUMBER=... node tests/clients/inbox.mjs
import { randomBytes } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { decode, encode } from "@msgpack/msgpack";
import twilio from "twilio";
import WebSocket from "ws";

const env = process.env;
const base = env.SB_URL;
const wsUrl = base.replace(/^http/, "ws") + "/v1/inbox";
const check = (ok, what, detail) => console.log(JSON.stringify({ ok: !!ok, what, detail: detail ?? null }));
const sid = (prefix) => prefix + randomBytes(16).toString("hex");

// A client of one subprotocol: frames decoded into a queue that next() reads with a deadline.
function client(protocol) {
  const ws = new WebSocket(wsUrl, protocol);
  const c = { ws, queue: [], waiters: [], binary: [], closed: null };
  const push = (v) => (c.waiters.length ? c.waiters.shift()(v) : c.queue.push(v));
  ws.on("message", (data, isBinary) => {
    c.binary.push(isBinary);
    try {
      push(protocol === "switchboard.v1.msgpack" ? decode(data) : JSON.parse(data.toString("utf8")));
    } catch (e) {
      push({ undecodable: String(e) });
    }
  });
  ws.on("close", (code) => {
    c.closed = code;
    push({ closed: code });
  });
  ws.on("error", (e) => push({ error: String(e) }));
  c.open = new Promise((resolve) => ws.once("open", resolve).once("error", resolve));
  c.send = (frame) => ws.send(protocol === "switchboard.v1.msgpack" ? encode(frame) : JSON.stringify(frame));
  c.next = (ms = 5000) =>
    c.queue.length
      ? Promise.resolve(c.queue.shift())
      : new Promise((resolve) => {
          const t = setTimeout(() => {
            c.waiters.splice(c.waiters.indexOf(done), 1);
            resolve({ timeout: true });
          }, ms);
          const done = (v) => {
            clearTimeout(t);
            resolve(v);
          };
          c.waiters.push(done);
        });
  return c;
}

async function webhook(body) {
  const path = `/webhooks/twilio/${env.SB_SMS}`;
  const id = sid("SM");
  const params = { MessageSid: id, SmsSid: id, AccountSid: "AC" + "3".repeat(32), From: "+14155550166",
                   To: env.SB_SMS_NUMBER, Body: body, NumMedia: "0" };
  const r = await fetch(base + path, { method: "POST", body: new URLSearchParams(params), headers: {
    "X-Twilio-Signature": twilio.getExpectedTwilioSignature(env.SB_TOKEN, base + path, params) } });
  return { status: r.status, id };
}

const json = client("switchboard.v1.json");
const pack = client("switchboard.v1.msgpack");
await Promise.all([json.open, pack.open]);
check(json.ws.protocol === "switchboard.v1.json" && pack.ws.protocol === "switchboard.v1.msgpack",
      "ws: the server selects each client's subprotocol", [json.ws.protocol, pack.ws.protocol]);

json.send({ op: "hello", token: env.SB_KEY });
pack.send({ op: "hello", token: env.SB_KEY });
const [jw, pw] = [await json.next(), await pack.next()];
check(jw.op === "welcome" && pw.op === "welcome" && jw.cursor === pw.cursor && jw.tenant_id === pw.tenant_id,
      "welcome on both, with the same tenant and cursor (msgpack decoded by @msgpack/msgpack)", [jw, pw]);

const body = "Grüße über ws ✓ 🚀";
const hook = await webhook(body);
const [je, pe] = [await json.next(), await pack.next()];
check(hook.status === 200 && je.op === "event" && je.type === "message.created" && je.cursor === jw.cursor + 1 &&
      je.data.body === body && je.data.provider_id === hook.id,
      "a signed webhook reaches the JSON client as message.created, next cursor, body intact", je);
check(isDeepStrictEqual(pe, je), "the msgpack client gets the same map", { msgpack: pe, json: je });
check(json.binary.every((b) => !b) && pack.binary.every((b) => b), "JSON in text frames, msgpack in binary frames",
      { json: json.binary, msgpack: pack.binary });
const [ju, pu] = [await json.next(), await pack.next()];
check(ju.type === "conversation.updated" && ju.cursor === je.cursor + 1 && isDeepStrictEqual(pu, ju),
      "then conversation.updated, on both", ju);

pack.send({ op: "ping" });
const pong = await pack.next();
check(pong.op === "pong", "op ping is answered op pong (msgpack)", pong);
const wsPong = await new Promise((resolve) => {
  const t = setTimeout(() => resolve(false), 3000);
  json.ws.once("pong", (d) => {
    clearTimeout(t);
    resolve(d.toString() === "are you there");
  });
  json.ws.ping("are you there");
});
check(wsPong, "a WebSocket ping is answered with a pong carrying its payload");

const key = sid("k");
pack.send({ op: "send", channel_id: env.SB_SMS, to: "+14155550155", body: "from msgpack", idempotency_key: key });
let accepted;
for (let i = 0; i < 5; i++) { // events of the send itself (message.created, statuses) may come first
  const f = await pack.next();
  if (f.op !== "event") {
    accepted = f;
    break;
  }
}
check(accepted && accepted.op === "accepted" && accepted.idempotency_key === key && /^\d+$/.test(accepted.id),
      "op send is answered op accepted with the idempotency key and the message id", accepted);

const resumed = client("switchboard.v1.msgpack");
await resumed.open;
resumed.send({ op: "hello", token: env.SB_KEY, resume_after: jw.cursor });
const rw = await resumed.next();
const replay = [await resumed.next(), await resumed.next()];
check(rw.op === "welcome" && isDeepStrictEqual(replay, [pe, pu]),
      "a client resuming after the first welcome's cursor gets both events again, in order, unchanged",
      { welcome: rw, replay });

const bad = client("switchboard.v1.json");
await bad.open;
bad.send({ op: "hello", token: "not a key" });
const err = await bad.next();
const closed = await bad.next();
check(err.op === "error" && closed.closed === 4401, "a bad token: an error frame, then close 4401", [err, closed]);

for (const c of [json, pack, resumed]) c.ws.close(1000);
console.log(JSON.stringify({ end: true })); // the wrapper checks that the script got this far
