// The edge in workerd in front of the real fleetgate-server, seeded with the manufacturer world
// (tests/vectors/manufacturer.json, a password for every active user): device commands decided at
// the edge equal the server's own decisions and denied ones never reach it (its audit says so),
// GET /api/devices is byte-equal, a suspension, a removed member and a moved device reach the edge
// within 2 s, a key rotation mid-run is followed, and a logged-out session's access token is
// refused by the server at once and by the edge within its refresh interval.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PolicyEngine } from "fleetgate";
import { ROOT, http, serverBinary, startEdge, startServer, stop, waitFor } from "./harness.mjs";

const PROPAGATION_MS = 2000; // SPEC §8
const world = JSON.parse(readFileSync(join(ROOT, "tests/vectors/manufacturer.json"), "utf8")).snapshot;
const ACTIVE = world.users.filter((u) => u.status === "active").map((u) => u.id);
const DEVICES = world.devices.map((d) => d.id);
const EDGE_TOKEN = randomBytes(24).toString("base64url");
const passwords = Object.fromEntries(ACTIVE.map((u) => [u, `pw-${u}-${randomBytes(6).toString("hex")}`]));

let dir;
let db;
let server;
let edge;
const sessions = new Map(); // user → {token (session), access, accessExp}

const S = (path) => `${server.base}${path}`;
const E = (path) => `${edge.base}${path}`;

async function login(user) {
  const email = world.users.find((u) => u.id === user).email;
  const res = await http(S("/api/login"), { method: "POST", body: { email, password: passwords[user] } });
  assert.equal(res.status, 200, `login ${user}: ${res.text}`);
  const s = { token: res.json().token };
  sessions.set(user, s);
  return s;
}

/** A fresh access token of `user`'s session (logging in first when needed). */
async function accessToken(user, { fresh = false } = {}) {
  const s = sessions.get(user) ?? (await login(user));
  if (fresh || !s.access || s.accessExp - Date.now() / 1000 < 30) {
    const res = await http(S("/api/token"), { method: "POST", token: s.token });
    assert.equal(res.status, 200, `token ${user}: ${res.text}`);
    s.access = res.json().accessToken;
    s.accessExp = res.json().expiresAt;
  }
  return s.access;
}

/** The server's current full snapshot, read from its signed edge envelope. */
async function serverWorld() {
  const res = await http(S("/api/edge/snapshot"), { token: EDGE_TOKEN });
  assert.equal(res.status, 200, res.text);
  return JSON.parse(Buffer.from(res.json().payload, "base64url").toString("utf8"));
}

async function edgeAt(revision) {
  await waitFor(`the edge at revision ${revision}`, async () => {
    const st = await edge.status();
    return st.state === "ready" && st.revision >= revision;
  });
}

const sendCommand = (base, device, token) =>
  http(`${base}/api/devices/${encodeURIComponent(device)}/commands`, { method: "POST", token, body: { name: "reboot", params: { delay: 1 } } });

async function audit() {
  const entries = new Map();
  for (const admin of ["ceo", "globex-admin"]) {
    const res = await http(S("/api/audit"), { token: await accessToken(admin) });
    assert.equal(res.status, 200, res.text);
    for (const e of res.json()) entries.set(e.id, e);
  }
  return [...entries.values()].filter((e) => e.action === "device.command");
}

async function serverCommand(command) {
  const res = await http(S("/api/commands"), { method: "POST", token: await accessToken("ceo"), body: command });
  assert.equal(res.status, 200, `${JSON.stringify(command)}: ${res.text}`);
  return { revision: res.json().revision, at: performance.now() };
}

before(async () => {
  serverBinary(); // fail early and clearly when it is not built
  dir = mkdtempSync(join(tmpdir(), "fleetgate-edge-"));
  db = join(dir, "edge.db");
  writeFileSync(join(dir, "seed.json"), JSON.stringify({ snapshot: world, passwords }));
  writeFileSync(join(dir, "edge-tokens"), `${EDGE_TOKEN}\n`);
  server = await startServer(["--db", db, "--seed", join(dir, "seed.json"), "--edge-token-file", join(dir, "edge-tokens"), "--renew-seconds", "5"]);
  edge = await startEdge({ origin: server.base, edgeToken: EDGE_TOKEN });
  await waitFor("the edge to load", async () => (await edge.status()).state === "ready");
  for (const user of ACTIVE) await accessToken(user);
});

after(async () => {
  await stop(edge?.proc);
  await stop(server?.proc);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("device commands: the edge decides as the server does, and denied ones never reach it", async () => {
  const revision = (await serverWorld()).revision;
  await edgeAt(revision);
  const auditBefore = new Set((await audit()).map((e) => e.id));
  const atEdge = new Map();
  for (const user of ACTIVE) {
    for (const device of DEVICES) {
      const res = await sendCommand(edge.base, device, await accessToken(user));
      assert.equal(res.revision, String(revision));
      assert.ok(res.edge === "allowed" || res.edge === "denied", `${user} → ${device}: ${res.edge}`);
      if (res.edge === "allowed") assert.equal(res.status, 202, `${user} → ${device} forwarded: ${res.text}`);
      else assert.equal(res.status, 403, `${user} → ${device}`);
      atEdge.set(`${user} ${device}`, res);
    }
  }
  const allowedPairs = [...atEdge].filter(([, r]) => r.edge === "allowed").map(([k]) => k);
  const deniedPairs = [...atEdge].filter(([, r]) => r.edge === "denied").map(([k]) => k);
  assert.ok(allowedPairs.length >= 10 && deniedPairs.length >= 50, `a spread (${allowedPairs.length} allowed, ${deniedPairs.length} denied)`);

  // The server's audit: one entry per allowed pair, none for a denied one.
  const seen = (await audit()).filter((e) => !auditBefore.has(e.id)).map((e) => `${e.actor} ${e.target}`);
  assert.deepEqual(seen.filter((k) => deniedPairs.includes(k)), [], "denied at the edge, never seen by the server");
  assert.deepEqual([...seen].sort(), [...allowedPairs].sort(), "every allowed command reached the server once");

  // The same requests straight to the server: the same decisions.
  for (const user of ACTIVE) {
    for (const device of DEVICES) {
      const direct = await sendCommand(server.base, device, await accessToken(user));
      const viaEdge = atEdge.get(`${user} ${device}`);
      assert.equal(viaEdge.status, direct.status, `${user} → ${device}`);
      if (direct.status === 403) assert.equal(viaEdge.text, direct.text, `${user} → ${device}`);
      else assert.equal(viaEdge.json().decision.code, direct.json().decision.code, `${user} → ${device}`);
    }
  }
});

test("GET /api/devices through the edge is byte-equal to the server's", async () => {
  const snapshot = await serverWorld();
  await edgeAt(snapshot.revision);
  const engine = PolicyEngine.fromJson(snapshot);
  let answered = 0;
  for (const user of ACTIVE) {
    const token = await accessToken(user);
    const orgs = [null, "", ...engine.switchableOrgs(user)];
    if (!orgs.includes("globex")) orgs.push("globex"); // one the user may not switch into
    for (const activeOrg of orgs) {
      for (const action of [null, "view", "control", "steer"]) {
        const q = new URLSearchParams();
        if (activeOrg !== null) q.set("activeOrg", activeOrg);
        if (action !== null) q.set("action", action);
        const path = `/api/devices${q.size ? `?${q}` : ""}`;
        const [viaEdge, direct] = [await http(E(path), { token }), await http(S(path), { token })];
        assert.equal(viaEdge.edge, "answered", `${user} ${path}`);
        assert.equal(viaEdge.status, direct.status, `${user} ${path}`);
        assert.equal(viaEdge.text, direct.text, `${user} ${path}`);
        assert.equal(viaEdge.headers.get("content-type"), direct.headers.get("content-type"), `${user} ${path}`);
        answered++;
      }
    }
    // A session token cannot be checked at the edge: forwarded, the server's answer.
    const bySession = await http(E("/api/devices"), { token: sessions.get(user).token });
    assert.equal(bySession.edge, "forwarded");
    assert.equal(bySession.text, (await http(S("/api/devices"), { token: sessions.get(user).token })).text);
  }
  engine.free();
  assert.ok(answered > 100, `${answered} lists compared`);
});

test("a key rotation mid-run is followed without a gap", async () => {
  const before = await edge.status();
  let running = true;
  const tags = new Set();
  const prober = (async () => {
    while (running) tags.add((await sendCommand(edge.base, "jones-cam", await accessToken("jones-kid"))).edge);
  })();
  try {
    const rotated = spawnSync(serverBinary(), ["rotate-key", "--db", db], { encoding: "utf8" });
    assert.equal(rotated.status, 0, rotated.stderr);
    const keys = await waitFor("the new key published", async () => {
      const list = (await http(S("/.well-known/fleetgate-keys"))).json().keys;
      const active = list.find((k) => k.active);
      return active && !before.keyIds.includes(active.keyId) ? list : null;
    });
    const newKey = keys.find((k) => k.active).keyId;
    // A change signed with the new key (us-staff, Staff of acme-us, gains lab-1), and a token signed with it.
    assert.equal((await sendCommand(edge.base, "lab-1", await accessToken("us-staff"))).edge, "denied");
    const { revision, at } = await serverCommand({ op: "moveDevice", device: "lab-1", org: "acme-us" });
    await edgeAt(revision);
    console.log(`# after the rotation: a change visible at the edge in ${Math.round(performance.now() - at)} ms`);
    const token = await accessToken("us-staff", { fresh: true });
    assert.equal(JSON.parse(Buffer.from(token.split(".")[0], "base64url")).kid, newKey, "the server signs with the new key");
    const res = await sendCommand(edge.base, "lab-1", token);
    assert.equal(res.edge, "allowed", res.text);
    assert.equal(res.status, 202, res.text);
    const st = await edge.status();
    assert.ok(st.keyIds.includes(newKey), `edge keys ${st.keyIds}`);
    assert.equal(st.stats.loads, before.stats.loads, "no snapshot reload was needed");
  } finally {
    running = false;
    await prober;
  }
  assert.deepEqual([...tags].filter((t) => t !== "allowed"), [], "no bypass or refusal during the rotation");
});

test("a logged-out session's access token: refused by the server at once, by the edge within its refresh interval", async () => {
  const s = await login("jones");
  const res0 = await http(S("/api/token"), { method: "POST", token: s.token });
  const token = res0.json().accessToken;
  assert.equal((await sendCommand(edge.base, "jones-thermo", token)).edge, "allowed");
  const out = await http(S("/api/logout"), { method: "POST", token: s.token });
  assert.ok(out.status < 300, out.text);
  const t0 = performance.now();
  const direct = await sendCommand(server.base, "jones-thermo", token);
  assert.equal(direct.status, 401, "the server refuses it at once");
  assert.equal(direct.json().error.code, "UNAUTHENTICATED");
  const refused = await waitFor(
    "the edge to refuse the ended session",
    async () => {
      const r = await sendCommand(edge.base, "jones-thermo", token);
      return r.status === 401 ? r : null;
    },
    { timeout: PROPAGATION_MS },
  );
  assert.equal(refused.edge, "denied");
  assert.equal(refused.json().error.code, "UNAUTHENTICATED");
  console.log(`# logout refused at the edge after ${Math.round(performance.now() - t0)} ms`);
  sessions.delete("jones");
});

/** Waits until `probe(response)` holds for the edge's answer to `user` → `device`; returns ms since `at`. */
async function effectAtEdge(what, user, device, probe, at) {
  const token = await accessToken(user);
  await waitFor(what, async () => probe(await sendCommand(edge.base, device, token)), { timeout: PROPAGATION_MS, interval: 10 });
  return Math.round(performance.now() - at);
}

test("a suspension, a removed member and a moved device take effect at the edge within 2 s", async () => {
  const deniedOrRefused = (r) => r.edge === "denied" && (r.status === 403 || r.status === 401);
  const latencies = {};

  // A moved device: us-staff (Staff of acme-us, whose table adds control) controls us-1 until it
  // moves to acme-eu, where eu-office (OfficeAdmin of acme-eu) gains it.
  assert.equal((await sendCommand(edge.base, "us-1", await accessToken("us-staff"))).edge, "allowed");
  assert.equal((await sendCommand(edge.base, "us-1", await accessToken("eu-office"))).edge, "denied");
  let c = await serverCommand({ op: "moveDevice", device: "us-1", org: "acme-eu" });
  latencies.moveDevice = await effectAtEdge("the move (control lost)", "us-staff", "us-1", deniedOrRefused, c.at);
  latencies.moveDeviceGained = await effectAtEdge("the move (control gained)", "eu-office", "us-1", (r) => r.edge === "allowed", c.at);

  // A removed member: multi (Admin of acme-eu, Staff of dist-north) loses acme-eu, keeps a session.
  assert.equal((await sendCommand(edge.base, "eu-demo", await accessToken("multi"))).edge, "allowed");
  c = await serverCommand({ op: "removeMember", user: "multi", org: "acme-eu" });
  latencies.removeMember = await effectAtEdge("the removal", "multi", "eu-demo", deniedOrRefused, c.at);

  // A suspension: installer controls jones-lock until suspended (its sessions end too).
  assert.equal((await sendCommand(edge.base, "jones-lock", await accessToken("installer"))).edge, "allowed");
  c = await serverCommand({ op: "suspendUser", user: "installer" });
  latencies.suspendUser = await effectAtEdge("the suspension", "installer", "jones-lock", deniedOrRefused, c.at);

  console.log(`# propagation server → edge (ms): ${JSON.stringify(latencies)}`);
  const st = await edge.status();
  assert.equal(st.revision, (await serverWorld()).revision);
});
