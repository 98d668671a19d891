// tests/browser/inbox.mjs — drives the inbox page (/inbox) in Debian's headless Chromium with playwright-core, as an
// agent would through a day, and checks what is on screen, not only what is in the DOM: which parts are visible,
// where they are (bounding boxes: the newest message below the older ones and next to the reply box, the view
// following new messages), the ticks drawn, and two screenshots (the sign-in card, a busy inbox) saved into
// $SB_SHOTS for tests/integration/test_inbox_page.py to compare with the stored ones. Prints one JSON line per check
// ({"ok":bool,"what":...,"detail":...}), then {"end":true}.
//
// Rendering is made deterministic: a fixed viewport, locale and time zone, reduced motion, no scrollbars, the fixed
// texts the wrapper passes, and the times on the page masked in the screenshots.
//
//   SB_URL SB_KEY SB_CHANNEL SB_VOICE_CHANNEL SB_NUMBER SB_VOICE_NUMBER SB_CUSTOMER SB_TOKEN SB_SHOTS SB_TEXTS (JSON)
import { createHmac } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = process.env;
const base = env.SB_URL;
const T = JSON.parse(env.SB_TEXTS);
const check = (ok, what, detail) => console.log(JSON.stringify({ ok: !!ok, what, detail: detail ?? null }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const hex = (n) => [...crypto.getRandomValues(new Uint8Array(n))].map((b) => b.toString(16).padStart(2, "0")).join("");

// A form POSTed as Twilio would, signed with the channel's auth token (URL + sorted params, HMAC-SHA1).
async function twilio(path, params) {
  const url = base + path;
  const data = url + Object.keys(params).sort().map((k) => k + params[k]).join("");
  const sig = createHmac("sha1", env.SB_TOKEN).update(data).digest("base64");
  const r = await fetch(url, { method: "POST", body: new URLSearchParams(params),
                               headers: { "X-Twilio-Signature": sig } });
  return r.status;
}

const inbound = (body) => {
  const sid = "SM" + hex(16);
  return twilio(`/webhooks/twilio/${env.SB_CHANNEL}`, { MessageSid: sid, SmsSid: sid, AccountSid: "AC" + "7".repeat(32),
    From: env.SB_CUSTOMER, To: env.SB_NUMBER, Body: body, NumMedia: "0" });
};

const callSid = "CA" + hex(16);
const voice = (path, params) => twilio(`/webhooks/twilio/${env.SB_VOICE_CHANNEL}/voice${path}`,
  Object.assign({ AccountSid: "AC" + "7".repeat(32), CallSid: callSid, Direction: "inbound" }, params));

// The box of a locator, or null when it is not rendered.
const box = (loc) => loc.boundingBox();
// A message's box: the page draws its list anew as the conversation's page and live events arrive, so a message
// found a moment ago may be between two drawings (no box) when measured; it is measured again once drawn.
const drawn = async (loc) => {
  for (let i = 0; i < 50; i++) {
    const b = await box(loc);
    if (b) return b;
    await page.waitForTimeout(100);
  }
  return null;
};
const visible = (sel) => page.locator(sel).isVisible();

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars", "--font-render-hinting=none",
         "--disable-lcd-text", "--force-color-profile=srgb"],
});
const problems = [];
let page;
try {
  const context = await browser.newContext({ viewport: { width: 960, height: 600 }, deviceScaleFactor: 1,
                                             locale: "en-US", timezoneId: "UTC", reducedMotion: "reduce",
                                             colorScheme: "light" });
  page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
  page.on("pageerror", (e) => problems.push(String(e)));
  let documents = 0;
  page.on("request", (r) => { if (r.resourceType() === "document") documents++; });
  // Times on the page change from run to run: they are set to one fixed text first (same width every time).
  const shot = async (name) => {
    await page.evaluate(() => document.querySelectorAll(".when").forEach((e) => { if (e.textContent) e.textContent = "12:00"; }));
    writeFileSync(join(env.SB_SHOTS, name + ".png"), await page.screenshot({ animations: "disabled", caret: "hide" }));
  };

  // ---- signed out: the card alone -------------------------------------------------------------------------------
  const resp = await page.goto(`${base}/inbox`);
  check(resp.status() === 200, "GET /inbox serves the page", resp.status());
  check((resp.headers()["content-security-policy"] || "").includes("script-src 'self'"),
        "with a Content-Security-Policy", resp.headers()["content-security-policy"]);
  await page.locator("#signin").waitFor({ state: "visible" });
  check(await visible("#signin") && !(await visible("#inbox")) && !(await visible("#signout")),
        "signed out: the sign-in card is on screen, the inbox and the sign-out button are not");
  await page.evaluate(() => document.fonts.ready);
  await shot("signin");

  await page.fill("#key", "sb_live_" + "A".repeat(43));
  await page.click("#signin-button");
  await page.waitForSelector("#signin-error:not(:empty)", { timeout: 5000 });
  check(await visible("#signin-error"), "a wrong key is refused, visibly on the card");
  problems.length = 0; // the browser logs that refused request (401) as an error: it was meant

  // ---- signed in: the inbox alone -------------------------------------------------------------------------------
  await page.fill("#key", env.SB_KEY);
  await page.click("#signin-button");
  await page.waitForSelector("#state.live", { timeout: 10000 });
  check(!(await visible("#signin")) && await visible("#inbox") && await visible("#signout"),
        "signed in: the inbox and the sign-out button are on screen, the sign-in card is gone");
  const hb = await box(page.locator("header")), ib = await box(page.locator("#inbox"));
  check(ib && hb && Math.abs(ib.y - (hb.y + hb.height)) < 2 && Math.abs(ib.y + ib.height - 600) < 2,
        "the inbox fills the window right under the header", { header: hb, inbox: ib });
  const stored = await page.evaluate(() => JSON.stringify(sessionStorage));
  check(!stored.includes(env.SB_KEY), "the key itself is not kept in the browser");

  // ---- messages arrive: a conversation with its channel, last message and unread count ------------------------
  check((await inbound(T.first)) === 200 && (await inbound(T.second)) === 200, "two signed inbound SMS are accepted");
  const conv = page.locator("#conversations li").first();
  await conv.locator(".unread", { hasText: "2" }).waitFor({ timeout: 10000 });
  check(true, "the conversation appears live with 2 unread");
  const convText = await conv.innerText();
  check(convText.includes("SMS") && convText.includes(env.SB_CUSTOMER) && convText.includes(T.second),
        "it shows its channel (SMS), the customer and the last message", convText);
  await conv.click();
  const msgs = page.locator("#messages .msg");
  await page.locator(".msg.in", { hasText: T.second }).waitFor({ timeout: 10000 });
  await page.locator(".msg.in", { hasText: T.first }).waitFor({ timeout: 10000 });
  check(!(await conv.locator(".unread").isVisible()) ||
        (await conv.locator(".unread").innerText()).trim() === "", "opening it clears the unread count");
  const b1 = await drawn(page.locator(".msg.in", { hasText: T.first }));
  const b2 = await drawn(page.locator(".msg.in", { hasText: T.second }));
  check(b1 && b2 && b1.y + b1.height <= b2.y, "the older message is above the newer one", { b1, b2 });

  // ---- a reply: at the bottom, next to the reply box, with its ticks --------------------------------------------
  await page.fill("#body", T.reply);
  await page.click("#send");
  const out = page.locator(".msg.out", { hasText: T.reply });
  await out.waitFor({ timeout: 10000 });
  await page.waitForFunction((r) => [...document.querySelectorAll(".msg.out")].some((m) =>
    m.textContent.includes(r) && m.dataset.status === "delivered"), T.reply, { timeout: 15000 });
  const ticks = await out.locator(".ticks").evaluate((e) => getComputedStyle(e, "::after").content);
  check(ticks === '"✓✓"' && (await out.locator(".status").innerText()) === "delivered",
        "the reply's status changes live to delivered, drawn as two ticks", ticks);
  const bo = await drawn(out), br = await box(page.locator("#reply"));
  const b2now = await drawn(page.locator(".msg.in", { hasText: T.second }));
  check(bo && b2now && br && bo.y >= b2now.y + b2now.height && br.y - (bo.y + bo.height) < 40,
        "the reply is below the older messages, right above the reply box", { older: b2now, reply: bo, box: br });
  check((await page.locator("#conversations li .last").first().innerText()).includes("You: " + T.reply),
        "the conversation's last message is the reply");

  // ---- a busy conversation: the view follows new messages --------------------------------------------------------
  for (const t of T.more) await inbound(t);
  const newest = page.locator(".msg.in", { hasText: T.more[T.more.length - 1] });
  await newest.waitFor({ timeout: 10000 });
  await sleep(200);
  const order = await msgs.evaluateAll((els) => els.map((e) => e.getBoundingClientRect().top));
  check(order.every((y, i) => i === 0 || y > order[i - 1]), "every message is below the one before it");
  const lb = await box(page.locator("#messages")), nb = await drawn(newest);
  const scrolled = await page.locator("#messages").evaluate((e) => e.scrollHeight > e.clientHeight);
  check(scrolled && nb && lb && nb.y + nb.height <= lb.y + lb.height + 1 && nb.y >= lb.y,
        "the list overflows and the newest message is in view at its bottom", { list: lb, newest: nb });
  check(await page.locator(".msg.in", { hasText: T.first }).evaluate((e) => {
    const l = e.parentElement.getBoundingClientRect(), r = e.getBoundingClientRect();
    return r.bottom <= l.top;
  }), "the oldest message scrolled out of view above");

  // ---- a call, as it happens -------------------------------------------------------------------------------------
  check((await voice("", { CallStatus: "ringing", From: env.SB_CUSTOMER, To: env.SB_VOICE_NUMBER,
                            Caller: env.SB_CUSTOMER, Called: env.SB_VOICE_NUMBER, ApiVersion: "2010-04-01" })) === 200,
        "a call comes in (Twilio's voice webhook)");
  const call = page.locator("#calls li").first();
  await call.waitFor({ timeout: 10000 });
  check(await visible("#calls-panel") && (await call.innerText()).includes(env.SB_CUSTOMER),
        "it shows at once in the calls panel with the caller", await call.innerText());
  await voice("/status", { CallStatus: "in-progress", SequenceNumber: "1" });
  await call.locator(".call-state", { hasText: "in progress" }).waitFor({ timeout: 10000 });
  check(true, "answered: in progress");
  await voice("/status", { CallStatus: "completed", SequenceNumber: "2", CallDuration: "42" });
  await call.locator(".call-state", { hasText: "ended · 0:42" }).waitFor({ timeout: 10000 });
  check(true, "hung up: ended, with its duration");

  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await shot("inbox");
  check(problems.length === 0, "no script errors or CSP violations", problems);

  // ---- signing out, and an expired token: the card again, no reload loop ---------------------------------------
  const before = documents;
  await page.click("#signout");
  check(await visible("#signin") && !(await visible("#inbox")) && documents === before,
        "signing out shows the sign-in card alone, without reloading");
  check((await page.evaluate(() => JSON.stringify(sessionStorage))) === "{}", "and forgets the token");

  const r = await fetch(`${base}/v1/tokens`, { method: "POST", body: JSON.stringify({ ttl_s: 1 }),
    headers: { Authorization: "Bearer " + env.SB_KEY, "Content-Type": "application/json" } });
  const short = await r.json();
  await sleep(2100);
  // a token the server will refuse: the page does not know when it expires (as a page of an older version stored)
  await page.evaluate((t) => sessionStorage.setItem("sb.token", t), short.token);
  const n0 = documents;
  await page.reload();
  await page.waitForSelector("#signin-error:not(:empty)", { timeout: 5000 });
  await sleep(1500);
  check(await visible("#signin") && !(await visible("#inbox")) && documents === n0 + 1,
        "an expired token: the sign-in card with a message, and the page is loaded once, not again and again",
        { loads: documents - n0, error: await page.locator("#signin-error").innerText() });
  check((await page.locator("#signin-error").innerText()).includes("expired"), "the message says it expired");

  // a token the page knows the end of: signed out when it comes
  const r2 = await fetch(`${base}/v1/tokens`, { method: "POST", body: JSON.stringify({ ttl_s: 2 }),
    headers: { Authorization: "Bearer " + env.SB_KEY, "Content-Type": "application/json" } });
  const t2 = await r2.json();
  await page.evaluate((t) => { sessionStorage.setItem("sb.token", t.token);
                               sessionStorage.setItem("sb.expires", String(t.expires_at * 1000)); }, t2);
  const n1 = documents;
  await page.reload();
  await page.waitForSelector("#state.live", { timeout: 5000 });
  check(await visible("#inbox"), "a token still valid: the inbox");
  await page.waitForSelector("#signin:not([hidden])", { timeout: 5000 });
  await sleep(500);
  check(await visible("#signin") && !(await visible("#inbox")) && documents === n1 + 1,
        "when it expires the page signs out by itself, without reloading", { loads: documents - n1 });
  problems.length = 0;
} catch (e) {
  check(false, "the page flow completed", String(e) + " " + problems.join(" | "));
} finally {
  await browser.close();
}
console.log(JSON.stringify({ end: true })); // the wrapper checks that the script got this far
