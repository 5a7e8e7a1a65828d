// fleetgate/sync against the real server (SPEC §7): several clients (different viewers) stay
// equal to a fresh `/api/snapshot` of their user through 200 random commands by another user,
// through a server restart (SIGKILL, then the same --db on the same port: caught up by
// `/api/deltas`, no snapshot reload), and through a forced 410 (restarted with
// `--keep-changes 5`, more than 5 changes while the clients are stopped: the snapshot is
// reloaded). No engine the clients show is ever freed, and activateOnLoad: false holds updates
// back until activate().
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSync, SyncError } from "fleetgate/sync";
import { PolicyEngine } from "fleetgate";
import { commandGenerator, startServer, until } from "./server.mjs";

const world = JSON.parse(readFileSync(new URL("../vectors/manufacturer.json", import.meta.url), "utf8")).snapshot;
const PASSWORD = "sync-test-password";
const ACTOR = "ceo";
const VIEWERS = ["ceo", "eu-admin", "north-staff", "jones", "installer", "kim"];

let dir;
let server;
let port;
const tokens = {};
const clients = {};
const counts = {}; // per viewer: requests by path and status

// A seeded generator: a failure can be replayed with SYNC_SEED.
const SEED = Number(process.env.SYNC_SEED ?? Date.now() % 1e9);
const randomCommand = commandGenerator(world, ACTOR, SEED);

const canon = (v) =>
  Array.isArray(v)
    ? v.map(canon).sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1))
    : v && typeof v === "object"
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])]))
      : v;

async function api(user, path, { method = "GET", body } = {}) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method,
    headers: { authorization: `Bearer ${tokens[user]}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function login(user) {
  const res = await fetch(`http://127.0.0.1:${port}/api/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: world.users.find((u) => u.id === user).email, password: PASSWORD }),
  });
  assert.equal(res.status, 200, `login ${user}`);
  tokens[user] = (await res.json()).token;
}

function makeClient(user, options = {}) {
  counts[user] = {};
  const errors = [];
  const countingFetch = async (url, init) => {
    const res = await fetch(url, init);
    const key = `${new URL(url).pathname} ${res.status}`;
    counts[user][key] = (counts[user][key] ?? 0) + 1;
    return res;
  };
  const sync = createSync({
    baseUrl: `http://127.0.0.1:${port}`,
    fetch: countingFetch,
    getToken: () => tokens[user],
    retry: { min: 50, max: 400 },
    onError: (e) => errors.push(e),
    ...options,
  });
  // INVARIANT under test: whatever the client shows is live.
  sync.subscribe(() => {
    if (sync.engine !== null) assert.equal(sync.engine.freed, false, `${user}: a freed engine is visible`);
  });
  sync.errors = errors;
  return sync;
}

const count = (user, key) => counts[user][key] ?? 0;

async function serverRevision() {
  return (await api(ACTOR, "/api/snapshot")).body.revision;
}

/** Waits until every client shows the server's revision, then compares with a fresh snapshot. */
async function assertInSync(label) {
  const rev = await serverRevision();
  for (const user of VIEWERS) {
    const sync = clients[user];
    await until(() => sync.revision === rev, `${user} at revision ${rev} (${label}); is at ${sync.revision}`);
    const fresh = (await api(user, "/api/snapshot")).body;
    assert.equal(fresh.revision, rev, `${label}: no change in between`);
    assert.deepEqual(canon(sync.engine.toJson()), canon(fresh), `${user} equals a fresh /api/snapshot (${label}, seed ${SEED})`);
  }
}

async function restart(extra = []) {
  await server.stop("SIGKILL");
  server = await startServer(["--db", join(dir, "fleet.db"), "--listen", `127.0.0.1:${port}`, ...extra]);
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "fleetgate-sync-"));
  const passwords = Object.fromEntries(VIEWERS.map((u) => [u, PASSWORD]));
  writeFileSync(join(dir, "seed.json"), JSON.stringify({ snapshot: world, passwords }));
  server = await startServer(["--seed", join(dir, "seed.json"), "--db", join(dir, "fleet.db"), "--listen", "127.0.0.1:0"]);
  port = Number(new URL(server.base).port);
  for (const u of VIEWERS) await login(u);
  console.log(`sync test seed ${SEED} (SYNC_SEED=${SEED} replays it)`);
});

after(async () => {
  for (const c of Object.values(clients)) await c.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("clients follow 200 random commands by another user, equal to a fresh /api/snapshot", async () => {
  for (const u of VIEWERS) clients[u] = makeClient(u);
  await Promise.all(VIEWERS.map((u) => clients[u].ready));
  await assertInSync("first load");
  let allowed = 0;
  for (let i = 0; i < 200; i++) {
    // The actor decides on its own synced engine: wait until it is current.
    const rev = await serverRevision();
    await until(() => clients[ACTOR].revision === rev, `the actor's client at ${rev}`);
    const cmd = randomCommand(clients[ACTOR].engine);
    const res = await api(ACTOR, "/api/commands", { method: "POST", body: cmd });
    assert.ok([200, 403].includes(res.status), `${JSON.stringify(cmd)}: ${res.status} ${JSON.stringify(res.body)}`);
    if (res.status === 200) allowed++;
    if (i % 20 === 19) await assertInSync(`after command ${i + 1}`);
  }
  await assertInSync("after 200 commands");
  assert.ok(allowed >= 100, `only ${allowed} of 200 commands were allowed`);
  for (const u of VIEWERS) {
    assert.equal(count(u, "/api/snapshot 200"), 1, `${u}: deltas alone kept it current`);
    assert.equal(clients[u].status, "live");
  }
  console.log(`200 commands (${allowed} allowed) followed by ${VIEWERS.length} clients`);
});

test("a server restart: clients reconnect and catch up with /api/deltas, no reload", async () => {
  const before = Object.fromEntries(VIEWERS.map((u) => [u, count(u, "/api/deltas 200")]));
  await restart();
  // Changes right after the restart, possibly before the clients are back.
  for (let i = 0; i < 10; i++) {
    const cmd = randomCommand(PolicyEngine.fromJson((await api(ACTOR, "/api/snapshot")).body));
    await api(ACTOR, "/api/commands", { method: "POST", body: cmd });
  }
  await until(() => VIEWERS.every((u) => clients[u].status === "live"), "every client live again");
  await assertInSync("after the restart");
  for (const u of VIEWERS) {
    assert.ok(count(u, "/api/deltas 200") > before[u], `${u} caught up through /api/deltas`);
    assert.equal(count(u, "/api/snapshot 200"), 1, `${u} did not reload the snapshot`);
    assert.ok(clients[u].errors.some((e) => e instanceof SyncError && e.code === "NETWORK"), `${u} reported the lost connection: ${clients[u].errors.map(String)}`);
  }
});

test("a forced 410: the change log no longer reaches a stopped client, which reloads the snapshot", async () => {
  await Promise.all(VIEWERS.map((u) => clients[u].stop()));
  const revs = Object.fromEntries(VIEWERS.map((u) => [u, clients[u].revision]));
  let changes = 0;
  for (let i = 0; changes < 8 && i < 100; i++) {
    const cmd = randomCommand(PolicyEngine.fromJson((await api(ACTOR, "/api/snapshot")).body));
    if ((await api(ACTOR, "/api/commands", { method: "POST", body: cmd })).status === 200) changes++;
  }
  assert.equal(changes, 8);
  // The server prunes its change log at start and every minute: restarted with
  // `--keep-changes 5`, it forgets the revisions the stopped clients stand at.
  await restart(["--keep-changes", "5"]);
  const oldest = Math.min(...Object.values(revs));
  await until(async () => (await api(ACTOR, `/api/deltas?since=${oldest}`)).status === 410, "the change log pruned");
  for (const u of VIEWERS) {
    assert.equal(clients[u].revision, revs[u], `${u}: a stopped client does not move`);
    assert.equal(clients[u].engine.freed, false, `${u}: a stopped client keeps its engine`);
    clients[u].start();
  }
  await assertInSync("after the 410");
  for (const u of VIEWERS) {
    assert.equal(count(u, "/api/deltas 410"), 1, `${u} met the 410`);
    assert.equal(count(u, "/api/snapshot 200"), 2, `${u} reloaded the snapshot once`);
  }
  // And live again afterwards.
  const res = await api(ACTOR, "/api/commands", { method: "POST", body: { op: "addDevice", id: "after-410", name: "After", org: "acme" } });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  await assertInSync("live after the 410");
});

test("activateOnLoad: false holds updates back until activate(), then frees the replaced engine", async () => {
  const held = makeClient(ACTOR, { activateOnLoad: false });
  try {
    await held.ready;
    const first = held.engine;
    const rev = held.revision;
    const res = await api(ACTOR, "/api/commands", { method: "POST", body: { op: "addDevice", id: "held-back", name: "Held back", org: "acme" } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    await until(() => held.pending, "an update pending");
    assert.equal(held.engine, first, "the visible engine is untouched while pending");
    assert.equal(held.revision, rev);
    assert.equal(first.freed, false);
    assert.equal(held.activate(), true);
    assert.equal(first.freed, true, "the replaced engine is freed after its successor is visible");
    assert.equal(held.pending, false);
    assert.equal(held.revision, res.body.revision);
    assert.ok(held.engine.canView(ACTOR, "held-back"));
    assert.equal(first.freed, true);
    assert.deepEqual(canon(held.engine.toJson()), canon((await api(ACTOR, "/api/snapshot")).body));
    assert.equal(held.activate(), false);
  } finally {
    await held.close();
  }
  assert.equal(held.engine, null);
});

test("a 401 stops the client with UNAUTHENTICATED", async () => {
  const bad = createSync({ baseUrl: `http://127.0.0.1:${port}`, getToken: () => "not-a-token", retry: { min: 10, max: 20 }, onError: (e) => bad.errs.push(e) });
  bad.errs = [];
  await until(() => bad.status === "stopped", "the client stopped");
  assert.equal(bad.errs.length, 1);
  assert.ok(bad.errs[0] instanceof SyncError);
  assert.equal(bad.errs[0].code, "UNAUTHENTICATED");
  assert.equal(bad.errs[0].status, 401);
  assert.equal(bad.engine, null);
  await bad.close();
});
