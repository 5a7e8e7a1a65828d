// The dashboard in headless Chromium against a real server seeded with the demo world: each
// demo user sees exactly what the conformance vectors say, org switching, controls allowed and
// denied with reasons, a live transfer seen without reload, and an escalation refused by the
// server when forced through fetch. Screenshots go to artifacts/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { launch } from "./browser.mjs";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const ARTIFACTS = join(ROOT, "artifacts");
const PASSWORD = "demo-password";
const vector = JSON.parse(readFileSync(join(ROOT, "tests/vectors/manufacturer.json"), "utf8"));
const expected = (user, options) =>
  vector.cases.find((c) => c.call === "visibleDevices" && c.args[0] === user && JSON.stringify(c.args[1]) === JSON.stringify(options) && !c.error).expect;

let server;
let base;
let browser;
let dir;

function serverBinary() {
  const candidates = [process.env.FLEETGATE_SERVER, join(ROOT, "target/debug/fleetgate-server"), join(ROOT, "target/release/fleetgate-server")];
  const found = candidates.find((p) => p && existsSync(p));
  if (!found) throw new Error("build the server first (cargo build -p fleetgate-server)");
  return found;
}

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  dir = mkdtempSync(join(tmpdir(), "fleetgate-dash-"));
  server = spawn(serverBinary(), ["--demo", "--db", join(dir, "demo.db"), "--listen", "127.0.0.1:0", "--www", join(ROOT, "www"), "--pkg", join(ROOT, "pkg")], {
    env: { ...process.env, RUST_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  base = await new Promise((resolve, reject) => {
    let out = "";
    server.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/listening on (http:\/\/[\d.:]+)/);
      if (m) resolve(m[1]);
    });
    server.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  server?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function signIn(user) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.errors = errors;
  await page.goto(base + "/");
  await page.waitForSelector("#login");
  await page.fill("#email", `${user}@example.test`);
  await page.fill("#password", PASSWORD);
  await page.click("#login button[type=submit]");
  await page.waitForSelector("#devices, #empty");
  return page;
}

const shown = (page) => page.$$eval("#devices .row", (rows) => rows.map((r) => r.dataset.device).sort());

test("each demo user sees exactly the devices the vectors say", async () => {
  for (const user of ["ceo", "eu-admin", "north-staff", "jones", "jones-kid", "kim"]) {
    const page = await signIn(user);
    const want = [...expected(user, undefined)].sort();
    if (want.length === 0) {
      assert.match(await page.textContent("#empty"), /no permission to view devices/);
    } else {
      assert.deepEqual(await shown(page), want, user);
    }
    await page.screenshot({ path: join(ARTIFACTS, `dashboard-${user}.png`), fullPage: true });
    assert.deepEqual(page.errors, []);
    await page.close();
  }
});

test("the org switch follows the engine", async () => {
  const page = await signIn("ceo");
  const tree = await page.$$eval("#orgs [data-org]", (bs) => bs.map((b) => b.dataset.org).filter(Boolean).sort());
  assert.deepEqual(tree, vector.cases.find((c) => c.call === "switchableOrgs" && c.args[0] === "ceo").expect);
  await page.click('#orgs [data-org="dist-north"]');
  await page.waitForFunction(() => document.querySelector("#count")?.textContent.startsWith("7 of 7"));
  assert.deepEqual(await shown(page), [...expected("ceo", { activeOrg: "dist-north" })].sort());
  await page.fill("#search", "jones");
  await page.waitForFunction(() => document.querySelector("#count")?.textContent.startsWith("4 of 7"));
  await page.screenshot({ path: join(ARTIFACTS, "dashboard-switch-org.png"), fullPage: true });
  await page.close();
});

test("a control allowed and one denied with its reason", async () => {
  const jones = await signIn("jones");
  await jones.click('button.control[data-id="jones-cam"]');
  await jones.waitForSelector("#result .ok");
  assert.match(await jones.textContent("#result"), /queued for jones-cam/);
  await jones.close();
  const staff = await signIn("north-staff");
  const button = await staff.$('button.control[data-id="north-stock-1"]');
  assert.equal(await button.isDisabled(), true);
  const why = await staff.textContent('.row[data-device="north-stock-1"] .why');
  // The words come from explain: the permission it lacks (labelled) and the org it is needed in.
  assert.equal(why, "you do not hold Control Organization Devices in Northern Distribution");
  await staff.screenshot({ path: join(ARTIFACTS, "dashboard-denied-control.png"), fullPage: true });
  await staff.close();
});

test("a transfer reaches the receiver's open dashboard without reload", async () => {
  const kid = await signIn("jones-kid");
  assert.deepEqual(await shown(kid), ["jones-cam"]);
  await kid.evaluate(() => (window.__noReload = true));
  const jones = await signIn("jones");
  await jones.selectOption("#transfer [name=device]", "jones-thermo");
  await jones.selectOption("#transfer [name=owner]", "jones-kid");
  await jones.waitForFunction(() => !document.querySelector("#transfer button").disabled);
  await jones.click("#transfer button");
  await jones.waitForSelector("dialog#confirm");
  assert.match(await jones.textContent("dialog#confirm #gained"), /Jones Kid — Jones Thermo \(view\)/);
  await jones.screenshot({ path: join(ARTIFACTS, "dashboard-preview.png"), fullPage: true });
  await jones.click("#confirm-ok");
  await jones.waitForSelector("#admin-result .ok");
  await kid.waitForSelector('#devices .row[data-device="jones-thermo"]', { timeout: 15000 });
  assert.equal(await kid.evaluate(() => window.__noReload), true, "the page was not reloaded");
  assert.deepEqual(await shown(kid), ["jones-cam", "jones-thermo"]);
  await kid.screenshot({ path: join(ARTIFACTS, "dashboard-live-transfer.png"), fullPage: true });
  await kid.close();
  await jones.close();
});

test("an escalation the UI hides is refused by the server too", async () => {
  const office = await signIn("eu-office");
  await office.fill("#invite [name=email]", "boss@example.test");
  await office.selectOption("#invite [name=role]", "Admin");
  await office.waitForFunction(() => document.querySelector("#invite button").disabled);
  // The reason comes from the engine: the permissions beyond the actor's, by their labels.
  assert.match(await office.getAttribute("#invite button", "title"), /permissions you do not hold in ACME Europe: .*Switch to sub-organizations/);
  const forced = await office.evaluate(async () => {
    const res = await fetch("/api/commands", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${localStorage.getItem("fleetgate.token")}` },
      body: JSON.stringify({ op: "invite", email: "boss@example.test", org: "acme-eu", role: "Admin" }),
    });
    return { status: res.status, body: await res.json() };
  });
  assert.equal(forced.status, 403);
  assert.equal(forced.body.error.code, "DENY_ESCALATION");
  await office.close();
});

test("the dashboard follows the server through the package's own fleetgate/sync", async () => {
  const page = await browser.newPage();
  const requests = [];
  page.on("request", (r) => requests.push({ path: new URL(r.url()).pathname, type: r.resourceType() }));
  await page.goto(base + "/");
  await page.waitForSelector("#login");
  await page.fill("#email", "jones@example.test");
  await page.fill("#password", PASSWORD);
  await page.click("#login button[type=submit]");
  await page.waitForSelector("#devices");
  const paths = requests.map((r) => r.path);
  assert.ok(paths.includes("/pkg/sync-web.js"), "loads fleetgate/sync from the package");
  assert.ok(requests.some((r) => r.path === "/api/events" && r.type === "fetch"), "events by streaming fetch");
  assert.ok(requests.some((r) => r.path === "/api/snapshot" && r.type === "fetch"));
  assert.deepEqual(page.errors ?? [], []);
  await page.close();
});
