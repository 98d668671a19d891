// tests/browser/inbox.mjs — drives the inbox page (/inbox) in Debian's headless Chromium with playwright-core, as a
// person would: sign in with an API key, see an inbound message arrive live, open its conversation, reply, and watch
// the reply's status change to delivered. Prints one JSON line per check ({"ok":bool,"what":...,"detail":...}),
// then {"end":true}; tests/integration/test_inbox_page.py sets up the gateway, the mock provider and the tenant and
// turns them into TAP.
//
//   SB_URL=http://127.0.0.1:PORT SB_KEY=... SB_CHANNEL=... SB_NUMBER=... SB_TOKEN=... node tests/browser/inbox.mjs
import { createHmac } from "node:crypto";
import { chromium } from "playwright-core";

const env = process.env;
const base = env.SB_URL;
const check = (ok, what, detail) => console.log(JSON.stringify({ ok: !!ok, what, detail: detail ?? null }));

// An inbound SMS as Twilio posts it, signed with the channel's auth token (URL + sorted params, HMAC-SHA1).
async function inbound(body) {
  const url = `${base}/webhooks/twilio/${env.SB_CHANNEL}`;
  const sid = "SM" + [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
  const params = { MessageSid: sid, SmsSid: sid, AccountSid: "AC" + "7".repeat(32), From: "+14155550123",
                   To: env.SB_NUMBER, Body: body, NumMedia: "0" };
  const data = url + Object.keys(params).sort().map((k) => k + params[k]).join("");
  const sig = createHmac("sha1", env.SB_TOKEN).update(data).digest("base64");
  const r = await fetch(url, { method: "POST", body: new URLSearchParams(params),
                               headers: { "X-Twilio-Signature": sig } });
  return r.status;
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const problems = [];
try {
  const page = await browser.newPage();
  page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
  page.on("pageerror", (e) => problems.push(String(e)));
  const resp = await page.goto(`${base}/inbox`);
  check(resp.status() === 200, "GET /inbox serves the page", resp.status());
  check((resp.headers()["content-security-policy"] || "").includes("script-src 'self'"),
        "with a Content-Security-Policy", resp.headers()["content-security-policy"]);

  await page.fill("#key", "sb_live_" + "A".repeat(43));
  await page.click("#signin-button");
  await page.waitForSelector("#signin-error:not(:empty)", { timeout: 5000 });
  check(true, "a wrong key is refused on the page");
  problems.length = 0; // the browser logs that refused request (401) as an error: it was meant

  await page.fill("#key", env.SB_KEY);
  await page.click("#signin-button");
  await page.waitForSelector("#state.live", { timeout: 10000 });
  check(true, "signing in with the API key: the live inbox is connected");
  const stored = await page.evaluate(() => JSON.stringify(sessionStorage));
  check(!stored.includes(env.SB_KEY), "the key itself is not kept in the browser");

  const text = "Hi from a browser test 🌐 " + Date.now();
  check((await inbound(text)) === 200, "a signed inbound SMS is accepted");
  await page.waitForSelector("#conversations li", { timeout: 10000 });
  check(true, "its conversation appears live in the list");
  await page.click("#conversations li");
  const inMsg = page.locator(".msg.in", { hasText: text });
  await inMsg.waitFor({ timeout: 10000 });
  check(true, "opening it shows the message, Unicode intact");

  const reply = "Thanks! " + Date.now();
  await page.fill("#body", reply);
  await page.click("#send");
  const out = page.locator(".msg.out", { hasText: reply });
  await out.waitFor({ timeout: 10000 });
  check(true, "the reply appears as an outbound message");
  await page.waitForFunction((r) => [...document.querySelectorAll(".msg.out")].some((m) =>
    m.textContent.includes(r) && m.querySelector(".status").textContent === "delivered"), reply, { timeout: 15000 });
  check(true, "and its status changes live to delivered");

  const second = "Second message " + Date.now();
  await inbound(second);
  await page.locator(".msg.in", { hasText: second }).waitFor({ timeout: 10000 });
  check(true, "a further inbound message arrives in the open conversation");
  check(problems.length === 0, "no script errors or CSP violations", problems);
} catch (e) {
  check(false, "the page flow completed", String(e) + " " + problems.join(" | "));
} finally {
  await browser.close();
}
console.log(JSON.stringify({ end: true })); // the wrapper checks that the script got this far
