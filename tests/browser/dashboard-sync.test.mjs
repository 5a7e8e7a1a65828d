// The dashboard page, in headless Chromium, stays equal to the server: for several viewers the
// device rows the page shows equal the viewer's `/api/devices` through 200 random commands by
// another user, a server restart (SIGKILL, the same --db on the same port: the page catches up
// with `/api/deltas`, no snapshot reload) and a forced 410 (changes made while the page cannot
// reach the server, then a restart with `--keep-changes 5`: the page reloads the snapshot once).
// The page learns every change through the package's fleetgate/sync; nothing here reloads it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { PolicyEngine } from "fleetgate";
import { launch } from "./browser.mjs";
import { commandGenerator, startServer, until } from "../sync/server.mjs";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const world = JSON.parse(readFileSync(join(ROOT, "tests/vectors/manufacturer.json"), "utf8")).snapshot;
const PASSWORD = "demo-password"; // the demo world's (`--demo`)
const ACTOR = "ceo";
const VIEWERS = ["eu-admin", "north-staff", "jones", "kim"];
const SEED = Number(process.env.SYNC_SEED ?? Date.now() % 1e9);
const randomCommand = commandGenerator(world, ACTOR, SEED);

let dir;
let server;
let port;
let browser;
let token;
const pages = {};
const seen = {}; // per viewer: responses by path and status

const args = (listen, extra = []) => ["--demo", "--db", join(dir, "demo.db"), "--listen", listen, "--www", join(ROOT, "www"), "--pkg", join(ROOT, "pkg"), ...extra];

async function api(base, path, { method = "GET", body, auth = token } = {}) {
  const res = await fetch(base + path, {
    method,
    headers: { ...(auth ? { authorization: `Bearer ${auth}` } : {}), ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function login(base, user) {
  const res = await api(base, "/api/login", { method: "POST", body: { email: `${user}@example.test`, password: PASSWORD }, auth: null });
  assert.equal(res.status, 200, `login ${user}`);
  return res.body.token;
}

/** Sends `n` random commands through `base`; returns how many were allowed. */
async function commands(base, n) {
  let allowed = 0;
  for (let i = 0; i < n; i++) {
    const engine = PolicyEngine.fromJson((await api(base, "/api/snapshot")).body);
    const cmd = randomCommand(engine);
    engine.free();
    const res = await api(base, "/api/commands", { method: "POST", body: cmd });
    assert.ok([200, 403].includes(res.status), `${JSON.stringify(cmd)}: ${res.status} ${JSON.stringify(res.body)}`);
    if (res.status === 200) allowed++;
  }
  return allowed;
}

const shown = (page) => page.$$eval("#devices .row", (rows) => rows.map((r) => r.dataset.device).sort());
const count = (user, key) => seen[user][key] ?? 0;

/** Every page shows exactly its viewer's devices as the server lists them now. */
async function assertPagesEqualServer(label) {
  for (const user of VIEWERS) {
    const want = (await api(server.base, "/api/devices", { auth: pages[user].token })).body.slice().sort();
    const what = `${user}'s page shows its ${want.length} devices (${label}, seed ${SEED})`;
    await until(async () => JSON.stringify(await shown(pages[user])) === JSON.stringify(want), what, 20000).catch(async (e) => {
      assert.deepEqual(await shown(pages[user]), want, what); // the difference, if it is still there
      throw e;
    });
    assert.deepEqual(pages[user].errors, [], `${user}: no page errors (${label})`);
  }
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "fleetgate-dash-sync-"));
  server = await startServer(args("127.0.0.1:0"));
  port = Number(new URL(server.base).port);
  token = await login(server.base, ACTOR);
  browser = await launch();
  for (const user of VIEWERS) {
    seen[user] = {};
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.errors = [];
    page.on("pageerror", (e) => page.errors.push(String(e)));
    page.on("response", (r) => {
      const key = `${new URL(r.url()).pathname} ${r.status()}`;
      seen[user][key] = (seen[user][key] ?? 0) + 1;
    });
    await page.goto(server.base + "/");
    await page.waitForSelector("#login");
    await page.fill("#email", `${user}@example.test`);
    await page.fill("#password", PASSWORD);
    await page.click("#login button[type=submit]");
    await page.waitForSelector("#devices, #empty");
    page.token = await login(server.base, user);
    pages[user] = page;
  }
  console.log(`dashboard sync seed ${SEED} (SYNC_SEED=${SEED} replays it)`);
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("dashboard pages follow 200 random commands by another user, equal to the server", async () => {
  await assertPagesEqualServer("first load");
  let allowed = 0;
  for (let round = 0; round < 5; round++) {
    allowed += await commands(server.base, 40);
    await assertPagesEqualServer(`after ${(round + 1) * 40} commands`);
  }
  assert.ok(allowed >= 100, `only ${allowed} of 200 commands were allowed`);
  for (const user of VIEWERS) assert.equal(count(user, "/api/snapshot 200"), 1, `${user}: deltas alone kept the page current`);
  console.log(`200 commands (${allowed} allowed) followed by ${VIEWERS.length} dashboard pages`);
});

test("a server restart: the pages reconnect and catch up with /api/deltas, no reload", async () => {
  const before = Object.fromEntries(VIEWERS.map((u) => [u, count(u, "/api/deltas 200")]));
  await server.stop("SIGKILL");
  server = await startServer(args(`127.0.0.1:${port}`));
  await commands(server.base, 10);
  for (const user of VIEWERS) await until(() => count(user, "/api/deltas 200") > before[user], `${user}'s page caught up through /api/deltas`, 20000);
  await assertPagesEqualServer("after the restart");
  for (const user of VIEWERS) assert.equal(count(user, "/api/snapshot 200"), 1, `${user}'s page did not reload the snapshot`);
});

test("a forced 410: changes the pages could not see, pruned from the log, reload the snapshot once", async () => {
  // The same store on another port, out of the pages' reach: eight changes they miss.
  await server.stop("SIGKILL");
  const hidden = await startServer(args("127.0.0.1:0"));
  let changes = 0;
  for (let i = 0; changes < 8 && i < 100; i++) changes += await commands(hidden.base, 1);
  assert.equal(changes, 8);
  await hidden.stop();
  // Back on the pages' port, pruning the log to the last 5 changes at start.
  server = await startServer(args(`127.0.0.1:${port}`, ["--keep-changes", "5"]));
  for (const user of VIEWERS) await until(() => count(user, "/api/snapshot 200") === 2, `${user}'s page reloaded the snapshot`, 20000);
  await assertPagesEqualServer("after the 410");
  for (const user of VIEWERS) {
    assert.equal(count(user, "/api/deltas 410"), 1, `${user}'s page met the 410 (once)`);
    assert.equal(count(user, "/api/snapshot 200"), 2, `${user}'s page reloaded the snapshot once`);
  }
  // And live again afterwards.
  await commands(server.base, 10);
  await assertPagesEqualServer("live after the 410");
});
