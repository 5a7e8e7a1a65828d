// The edge worker in workerd against an origin stub that signs envelopes and access tokens with
// keys made at run time: local decisions equal the engine's, bad envelopes (tampered, rolled back,
// expired, unknown key) are never applied and the edge keeps its last good state until it expires
// (then `bypass`), unknown key ids refresh the key set once, a key rotation is followed without a
// gap, revoked sessions are refused (by events and by polling), and garbage gets clear answers
// while the worker keeps serving.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { PolicyEngine } from "fleetgate";
import { SigningKey, http, nowS, startEdge, stop, waitFor } from "./harness.mjs";
import { StubOrigin } from "./stub-origin.mjs";

const EDGE_TOKEN = `edge-${process.pid}-${Date.now()}`;
const WORLD = {
  format: "fleetgate/snapshot@1",
  revision: 1,
  viewer: null,
  orgs: [
    { id: "acme", name: "ACME", parent: null },
    { id: "east", name: "East", parent: "acme" },
    { id: "west", name: "West", parent: "acme" },
  ],
  users: ["alice", "bob", "carol", "dave"].map((id) => ({ id, email: `${id}@acme.test`, name: id, status: "active" })),
  memberships: [
    { user: "alice", org: "acme", role: "Admin" },
    { user: "bob", org: "east", role: "Staff" },
    { user: "carol", org: "west", role: "Staff" },
    { user: "dave", org: "east", role: "User" },
  ],
  devices: [
    { id: "t1", name: "Thermo", org: "east", owner: null },
    { id: "t2", name: "Lock", org: "east", owner: null },
    { id: "w1", name: "Pump", org: "west", owner: null },
    { id: "a1", name: "Gate", org: "acme", owner: null },
  ],
};
const USERS = ["alice", "bob", "carol", "dave", "zed"];
const DEVICES = ["t1", "t2", "w1", "a1", "nope"];

let stub;
let origin;
let edge;
let sessions = 0;

/** A fresh access token for `user` signed by the stub's active key. */
const tokenFor = (user, opts = {}) => (opts.key ?? stub.key).token({ user, session: opts.session ?? `s-${user}-${++sessions}`, ...opts });
const command = (device, token, extra = {}) =>
  http(`${edge.base}/api/devices/${encodeURIComponent(device)}/commands`, { method: "POST", token, body: { name: "ping", params: { n: 1 } }, ...extra });
const status = () => edge.status();
const moveDevice = (id, org) => ({ op: "putDevice", device: { ...stub.world.devices.find((d) => d.id === id), org } });

before(async () => {
  stub = new StubOrigin({ snapshot: WORLD, edgeToken: EDGE_TOKEN });
  origin = await stub.listen();
  edge = await startEdge({ origin, edgeToken: EDGE_TOKEN });
  await waitFor("the edge to load", async () => (await status()).state === "ready");
});

after(async () => {
  await stop(edge?.proc);
  await stub?.close();
});

test("decides device commands locally, as the engine does; forwards allowed ones unchanged", async () => {
  const st = await status();
  assert.equal(st.revision, 1);
  assert.deepEqual(st.keyIds, ["k1"]);
  const engine = PolicyEngine.fromJson(stub.world);
  let allowed = 0;
  let denied = 0;
  for (const user of USERS) {
    for (const device of DEVICES) {
      const want = engine.explain(user, device, "control");
      const before = stub.forwarded.length;
      const token = tokenFor(user);
      const res = await http(`${edge.base}/api/devices/${device}/commands?trace=1`, {
        method: "POST",
        token,
        headers: { "x-client": `${user}/${device}`, "content-type": "application/json" },
        body: `{"name":"ping","params":{"who":"${user}"}}`,
      });
      assert.equal(res.revision, "1");
      if (want.allowed) {
        allowed++;
        assert.equal(res.status, 202, `${user} → ${device}`);
        assert.equal(res.edge, "allowed");
        assert.equal(stub.forwarded.length, before + 1);
        const seen = stub.forwarded.at(-1);
        assert.equal(seen.method, "POST");
        assert.equal(seen.path, `/api/devices/${device}/commands?trace=1`);
        assert.equal(seen.body, `{"name":"ping","params":{"who":"${user}"}}`);
        assert.equal(seen.headers.authorization, `Bearer ${token}`);
        assert.equal(seen.headers["x-client"], `${user}/${device}`);
        assert.equal(seen.headers["content-type"], "application/json");
      } else {
        denied++;
        assert.equal(res.status, 403, `${user} → ${device}`);
        assert.equal(res.edge, "denied");
        assert.equal(res.headers.get("content-type"), "application/json");
        assert.deepEqual(res.json(), { error: { code: want.code, message: `denied: ${want.code}` } });
        assert.equal(stub.forwarded.length, before, "a denied command never reaches the origin");
      }
    }
  }
  assert.ok(allowed >= 5 && denied >= 5, `a spread of both (${allowed} allowed, ${denied} denied)`);
  engine.free();
});

test("answers GET /api/devices as the engine computes it", async () => {
  const engine = PolicyEngine.fromJson(stub.world);
  for (const user of USERS) {
    const token = tokenFor(user);
    const orgs = [undefined, "", ...engine.switchableOrgs(user), "east", "nowhere"];
    for (const activeOrg of orgs) {
      for (const action of [undefined, "view", "control"]) {
        const q = new URLSearchParams();
        if (activeOrg !== undefined) q.set("activeOrg", activeOrg);
        if (action !== undefined) q.set("action", action);
        const res = await http(`${edge.base}/api/devices?${q}`, { token });
        assert.equal(res.edge, "answered", `${user} ${q}`);
        assert.equal(res.headers.get("content-type"), "application/json");
        let want;
        try {
          want = { status: 200, text: JSON.stringify(engine.visibleDevices(user, { action: action ?? "view", activeOrg: activeOrg || undefined })) };
        } catch (err) {
          want = { status: 403, text: JSON.stringify({ error: { code: err.code, message: err.message } }) };
        }
        assert.equal(res.status, want.status, `${user} ${q}`);
        assert.equal(res.text, want.text, `${user} ${q}`);
      }
    }
  }
  const bad = await http(`${edge.base}/api/devices?action=fly`, { token: tokenFor("bob") });
  assert.equal(bad.status, 400);
  assert.equal(bad.text, '{"error":{"code":"INVALID_ARGUMENT","message":"unknown action `fly`"}}');
  // What only the server can word is forwarded: no token, a session token, a duplicate field.
  for (const [headers, why] of [
    [{}, "no token"],
    [{ authorization: "Bearer c2Vzc2lvbi10b2tlbi1vZi1zb21lLWxlbmd0aA" }, "session token"],
  ]) {
    const res = await http(`${edge.base}/api/devices`, { headers });
    assert.equal(res.edge, "forwarded", why);
    assert.equal(res.status, 202, why);
  }
  const dup = await http(`${edge.base}/api/devices?action=view&action=control`, { token: tokenFor("bob") });
  assert.equal(dup.edge, "forwarded");
  engine.free();
});

test("follows signed deltas from the event stream", async () => {
  const before = stub.counts.snapshot;
  assert.equal((await command("t2", tokenFor("bob"))).edge, "allowed");
  stub.commit([moveDevice("t2", "west")]);
  const started = Date.now();
  await waitFor("the move at the edge", async () => (await command("t2", tokenFor("bob"))).status === 403, { timeout: 2000 });
  const res = await command("t2", tokenFor("carol"));
  assert.equal(res.edge, "allowed");
  assert.equal(res.revision, "2");
  assert.equal(stub.counts.snapshot, before, "no snapshot refetch for a delta that follows");
  console.log(`# stub delta visible at the edge after ${Date.now() - started} ms`);
});

/** Pushes a bad envelope; waits until the edge has rejected it and refetched the snapshot. */
async function pushRejected(envelope, what) {
  const st = await status();
  const snaps = stub.counts.snapshot;
  stub.pushDelta(envelope, 999);
  await waitFor(`the edge to reject the ${what}`, async () => (await status()).stats.rejected > st.stats.rejected);
  await waitFor(`the snapshot refetch after the ${what}`, () => stub.counts.snapshot > snaps);
}

/** Decisions and revision are those of the stub's world (the last good state). */
async function decidesOnLastGoodState(what) {
  const engine = PolicyEngine.fromJson(stub.world);
  for (const [user, device] of [["bob", "t1"], ["bob", "t2"], ["carol", "t2"], ["dave", "t1"]]) {
    const res = await command(device, tokenFor(user));
    assert.equal(res.revision, String(stub.revision), what);
    assert.equal(res.edge, engine.canControl(user, device) ? "allowed" : "denied", `${what}: ${user} → ${device}`);
  }
  engine.free();
  const st = await status();
  assert.equal(st.state, "ready", what);
  assert.equal(st.revision, stub.revision, what);
}

test("never applies a tampered, expired or unknown-key delta; keeps its last good state", async () => {
  const r = stub.revision;
  const evil = { from: r, to: r + 1, ops: [moveDevice("t1", "west")] };

  const good = stub.deltaEnvelope(evil);
  const forged = JSON.stringify({ format: "fleetgate/delta@1", from: r, to: r + 1, ops: [moveDevice("t1", "acme")], issuedAt: nowS(), expiresAt: nowS() + 300 });
  await pushRejected({ ...good, payload: Buffer.from(forged).toString("base64url") }, "tampered payload");
  await decidesOnLastGoodState("after a tampered payload");

  const sig = Buffer.from(good.signature, "base64url");
  sig[5] ^= 1;
  await pushRejected({ ...good, signature: sig.toString("base64url") }, "tampered signature");
  await decidesOnLastGoodState("after a tampered signature");

  await pushRejected(stub.deltaEnvelope(evil, { expiresAt: nowS() - 30 }), "expired delta");
  await decidesOnLastGoodState("after an expired delta");

  const keyFetches = stub.counts.keys;
  await pushRejected(new SigningKey("k-unknown").envelope({ format: "fleetgate/delta@1", ...evil, expiresAt: nowS() + 300 }), "unknown-key delta");
  assert.equal(stub.counts.keys, keyFetches + 1, "one key-set refresh before rejecting an unknown key id");
  await decidesOnLastGoodState("after an unknown-key delta");

  await pushRejected({ format: "fleetgate/signed@1", keyId: "k1", payload: "!!", signature: "??" }, "garbage envelope");
  await pushRejected("not json at all", "non-JSON envelope");
  await decidesOnLastGoodState("after garbage envelopes");
});

test("ignores a replayed (rolled-back) delta and refuses a rolled-back snapshot", async () => {
  const old = stub.log.at(-1); // the delta that made the current revision, validly signed again
  const st = await status();
  stub.pushDelta(stub.deltaEnvelope({ from: old.from, to: old.to, ops: [moveDevice("t2", "east")] }), old.to);
  stub.renew(); // events are handled in order: once the renewal is counted, the replay was too
  await waitFor("the renewal after the replay", async () => (await status()).stats.renewals > st.stats.renewals);
  await decidesOnLastGoodState("after a replayed delta");

  // A delta that skips ahead makes the edge refetch; the origin answers with an older snapshot.
  const oldWorld = structuredClone(WORLD);
  oldWorld.memberships.push({ user: "dave", org: "acme", role: "Admin" });
  stub.snapshotOverride = () => ({ body: stub.snapshotEnvelope({ world: oldWorld, revision: 1 }) });
  const r = stub.revision;
  await pushRejected(stub.deltaEnvelope({ from: r + 5, to: r + 6, ops: [] }), "rolled-back snapshot");
  await waitFor("the rolled-back snapshot to be refused", async () => (await status()).stats.rejected >= st.stats.rejected + 2);
  stub.snapshotOverride = null;
  await waitFor("the good snapshot again", async () => !(await status()).syncing);
  await decidesOnLastGoodState("after a rolled-back snapshot");
  assert.equal((await command("a1", tokenFor("dave"))).edge, "denied", "the old world's grant was not loaded");
});

test("a key rotation mid-run is followed without a gap", async () => {
  const loads = (await status()).stats.loads;
  let running = true;
  const tags = new Set();
  const prober = (async () => {
    while (running) tags.add((await command("t1", tokenFor("bob", { key: stub.published[0] }))).edge);
  })();
  const k2 = stub.rotate("k2");
  stub.commit([moveDevice("t1", "west")]); // signed with k2, unknown to the edge until it refreshes
  await waitFor("the k2-signed delta at the edge", async () => (await status()).revision === stub.revision, { timeout: 2000 });
  running = false;
  await prober;
  const st = await status();
  assert.deepEqual(st.keyIds, ["k1", "k2"]);
  assert.equal(st.stats.loads, loads, "the rotation needed no snapshot reload");
  assert.deepEqual([...tags].filter((t) => t !== "allowed" && t !== "denied"), [], "no bypass during the rotation");
  assert.equal((await command("t1", tokenFor("carol", { key: k2 }))).edge, "allowed", "a k2 token");
  assert.equal((await command("t1", tokenFor("carol", { key: stub.published[0] }))).edge, "allowed", "a k1 token, still published");
});

test("an access token of an unknown key id refreshes the key set once, then is refused", async () => {
  const stranger = new SigningKey("k-stranger");
  const keyFetches = stub.counts.keys;
  const res = await command("t1", stranger.token({ user: "carol", session: "s-x" }));
  assert.equal(res.status, 401);
  assert.equal(res.edge, "denied");
  assert.equal(res.json().error.code, "UNAUTHENTICATED");
  assert.equal(stub.counts.keys, keyFetches + 1);
  // A token older than the key set just fetched cannot be of a newer key: refused with no refresh.
  const again = await command("t1", stranger.token({ user: "carol", session: "s-y", iat: nowS() - 60 }));
  assert.equal(again.status, 401);
  assert.equal(stub.counts.keys, keyFetches + 1);
});

test("an access token accepted before is refused once it expires", async () => {
  const token = tokenFor("alice", { iat: nowS() - 10, exp: nowS() + 2 }); // alice (Admin of the root) controls every device
  assert.equal((await command("t1", token)).edge, "allowed");
  const res = await waitFor("the token to expire", async () => {
    const r = await command("t1", token);
    return r.status === 401 ? r : null;
  }, { timeout: 6000, interval: 200 });
  assert.equal(res.json().error.message, "the access token has expired");
});

test("revoked sessions are refused: from the event stream, then by polling when the stream drops", async () => {
  const viaEvents = tokenFor("carol", { session: "s-revoked-1" });
  assert.equal((await command("t1", viaEvents)).edge, "allowed");
  stub.revoke(["s-revoked-1"]);
  await waitFor("the revocation at the edge", async () => (await command("t1", viaEvents)).status === 401, { timeout: 2000 });
  assert.equal((await command("t1", tokenFor("carol"))).edge, "allowed", "other sessions of the user still work");

  stub.eventsOpen = false;
  stub.dropStreams();
  await waitFor("the edge to poll", async () => (await status()).follower === "polling");
  const viaPolling = tokenFor("carol", { session: "s-revoked-2" });
  assert.equal((await command("t1", viaPolling)).edge, "allowed");
  stub.revoked.push("s-revoked-2");
  await waitFor("the polled revocation", async () => (await command("t1", viaPolling)).status === 401, { timeout: 2500 });
  stub.commit([moveDevice("t1", "east")], { push: false });
  await waitFor("the polled delta", async () => (await command("t1", tokenFor("bob"))).edge === "allowed", { timeout: 2500 });
  stub.eventsOpen = true;
  await waitFor("the event stream again", async () => (await status()).follower === "events", { timeout: 10000 });
});

test("garbage gets clear answers and the worker keeps serving", async () => {
  const expectError = async (res, status, code, what) => {
    assert.equal(res.status, status, what);
    assert.ok(res.edge, `${what}: tagged`);
    assert.equal(res.headers.get("content-type"), "application/json", what);
    assert.equal(res.json().error.code, code, what);
  };
  const url = `${edge.base}/api/devices/t1/commands`;
  const post = (headers) => http(url, { method: "POST", headers, body: { name: "x" } });
  const header = b64 => Buffer.from(JSON.stringify(b64)).toString("base64url");
  const wrongKey = new SigningKey("k1"); // the right key id, the wrong key
  const cases = [
    [{}, "no credential"],
    [{ authorization: "Bearer" }, "empty bearer"],
    [{ authorization: "Basic YWxhZGRpbjpvcGVuc2VzYW1l" }, "basic auth"],
    [{ authorization: "Bearer a.b.c" }, "three garbage segments"],
    [{ authorization: "Bearer ..." }, "dots"],
    [{ authorization: `Bearer ${"x".repeat(9000)}` }, "an oversized token"],
    [{ authorization: "Bearer \u00e9t\u00e9" }, "non-ASCII"],
    [{ authorization: `Bearer ${header({ alg: "none", typ: "JWT", kid: "k1" })}.${header({ iss: "fleetgate", sub: "alice", sid: "s", iat: nowS(), exp: nowS() + 60 })}.` }, "alg none"],
    [{ authorization: `Bearer ${wrongKey.token({ user: "alice", session: "s" })}` }, "forged signature"],
    [{ authorization: `Bearer ${tokenFor("alice", { iat: nowS() - 900, exp: nowS() - 600 })}` }, "expired"],
    [{ authorization: `Bearer ${tokenFor("alice", { iat: nowS() + 3600, exp: nowS() + 3700 })}` }, "issued in the future"],
    [{ authorization: `Bearer ${tokenFor("alice", { claims: { sub: 42 } })}` }, "claims of the wrong shape"],
  ];
  for (const [headers, what] of cases) {
    const res = await post(headers);
    await expectError(res, 401, "UNAUTHENTICATED", what);
    assert.equal(res.edge, "denied", what);
  }
  await expectError(await http(url, { method: "POST", token: tokenFor("alice"), headers: { "x-big": "y".repeat(100 * 1024) } }), 431, "HEADERS_TOO_LARGE", "huge header");
  await expectError(await http(`${edge.base}/.fleetgate/edge`, { method: "PUT" }), 405, "METHOD_NOT_ALLOWED", "status route, wrong method");
  await expectError(await http(`${edge.base}/api/devices?action=`, { token: tokenFor("bob") }), 400, "INVALID_ARGUMENT", "empty action");
  await expectError(await command("\u{1F4A9}", tokenFor("alice")), 403, "DENY_UNKNOWN_DEVICE", "a device id that cannot exist");
  const bigBody = await http(`${edge.base}/api/devices/w1/commands`, { method: "POST", token: tokenFor("bob"), body: "z".repeat(2 << 20) });
  await expectError(bigBody, 403, "DENY_NO_PERMISSION", "a denied command with a 2 MiB body");
  // Unknown paths, wrong methods and undecodable ids are the origin's to answer.
  for (const [method, path] of [["GET", "/nope"], ["GET", "/api/devices/t1/commands"], ["DELETE", "/api/devices"], ["POST", "/api/devices/%ZZ/commands"], ["POST", "/api/devices/t1/commands/"]]) {
    const res = await http(`${edge.base}${path}`, { method, token: tokenFor("alice") });
    assert.equal(res.edge, "forwarded", `${method} ${path}`);
    assert.equal(res.json().stub, true, `${method} ${path}`);
  }
  // Bytes that are not HTTP, and a header block beyond what workerd reads: answered, never fatal.
  for (const raw of ["GARBAGE\r\n\r\n", `GET / HTTP/1.1\r\nHost: x\r\nX-Huge: ${"h".repeat(2 << 20)}\r\n\r\n`]) {
    const reply = await new Promise((resolve) => {
      const sock = connect(Number(new URL(edge.base).port), "127.0.0.1", () => sock.end(raw));
      let got = "";
      sock.on("data", (c) => (got += c));
      sock.on("close", () => resolve(got));
      sock.on("error", () => resolve(got));
    });
    assert.match(reply, /^HTTP\/1\.1 4\d\d /, JSON.stringify(reply.slice(0, 80)));
  }
  assert.equal((await status()).state, "ready");
  assert.equal((await command("t1", tokenFor("bob"))).edge, "allowed", "still deciding");
});

test("with only bad envelopes to go on, it keeps its last good state until that expires, then bypasses", async () => {
  const st = await status();
  // The last good renewal is short; everything after it is tampered.
  stub.renew({ expiresAt: nowS() + 4 });
  await waitFor("the short renewal", async () => (await status()).expiresAt <= nowS() + 4);
  const tampered = stub.snapshotEnvelope();
  tampered.signature = stub.snapshotEnvelope({ revision: stub.revision + 1 }).signature;
  stub.snapshotOverride = () => ({ body: tampered });
  await pushRejected({ ...stub.deltaEnvelope({ from: stub.revision, to: stub.revision, ops: [] }), signature: tampered.signature }, "tampered renewal");
  const mid = await status();
  assert.ok(mid.stats.rejected > st.stats.rejected);
  if (mid.expiresAt > nowS()) await decidesOnLastGoodState("before the last good state expires");
  const denied = tokenFor("dave");
  await waitFor("bypass after expiry", async () => (await command("t1", denied)).edge === "bypass", { timeout: 8000 });
  const before = stub.forwarded.length;
  const res = await command("t1", denied);
  assert.equal(res.edge, "bypass");
  assert.equal(res.status, 202, "forwarded to the origin, the authority");
  assert.equal(stub.forwarded.length, before + 1);
  assert.equal((await status()).state, "expired");
  // A good snapshot again: back to deciding.
  stub.snapshotOverride = null;
  await waitFor("a fresh state", async () => (await status()).state === "ready", { timeout: 15000 });
  assert.equal((await command("t1", denied)).edge, "denied");
});

test("a session revoked before the edge started is refused from its first decision", async () => {
  stub.revoked.push("s-ended-early");
  const token = tokenFor("carol", { session: "s-ended-early" });
  const fresh = await startEdge({ origin, edgeToken: EDGE_TOKEN });
  try {
    assert.equal((await fresh.status()).state, "ready");
    const res = await http(`${fresh.base}/api/devices/w1/commands`, { method: "POST", token, body: { name: "x" } });
    assert.equal(res.status, 401);
    assert.equal(res.edge, "denied");
    assert.equal((await http(`${fresh.base}/api/devices/w1/commands`, { method: "POST", token: tokenFor("carol"), body: { name: "x" } })).edge, "allowed");
  } finally {
    await stop(fresh.proc);
  }
});

test("no valid state and an unreachable origin: bypass, and 502 ORIGIN_UNAVAILABLE", async () => {
  const dead = await startEdge({ origin: "http://127.0.0.1:9", edgeToken: EDGE_TOKEN, readyTimeout: 0 });
  try {
    const st = await dead.status();
    assert.notEqual(st.state, "ready");
    for (const [method, path] of [["POST", "/api/devices/t1/commands"], ["GET", "/api/devices"], ["GET", "/anything"]]) {
      const res = await http(`${dead.base}${path}`, { method, token: tokenFor("bob"), body: method === "POST" ? { name: "x" } : undefined });
      assert.equal(res.status, 502, path);
      assert.equal(res.edge, "bypass", path);
      assert.equal(res.revision, "none");
      assert.equal(res.json().error.code, "ORIGIN_UNAVAILABLE", path);
    }
  } finally {
    await stop(dead.proc);
  }
});
