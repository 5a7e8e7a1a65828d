// Malformed input across the boundary: every bad input throws an Error with its SPEC §6.4
// code (or denies, for unknown ids in checks), and the same engine keeps answering correctly.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { PolicyEngine } from "fleetgate";

const world = JSON.parse(readFileSync(new URL("../vectors/manufacturer.json", import.meta.url), "utf8")).snapshot;

function throwsCode(fn, code, mentions) {
  let err = null;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected ${code}, nothing thrown`);
  assert.ok(err instanceof Error, "throws a real Error");
  assert.equal(err.code, code, err.message);
  if (mentions) assert.ok(err.message.includes(mentions), `"${err.message}" mentions ${mentions}`);
}

function healthy(engine) {
  assert.equal(engine.canView("jones-kid", "jones-cam"), true);
  assert.equal(engine.canView("jones-kid", "jones-thermo"), false);
  assert.deepEqual(engine.visibleDevices("jones"), ["garage-door", "jones-cam", "jones-lock", "jones-thermo"]);
  assert.equal(engine.revision, 1);
}

test("bad snapshots throw with codes", () => {
  throwsCode(() => PolicyEngine.fromJson("{not json"), "INVALID_JSON");
  throwsCode(() => PolicyEngine.fromJson(""), "INVALID_JSON");
  throwsCode(() => PolicyEngine.fromJson({ ...world, extra: 1 }), "INVALID_SNAPSHOT", "extra");
  throwsCode(() => PolicyEngine.fromJson({ ...world, revision: -1 }), "INVALID_SNAPSHOT");
  throwsCode(() => PolicyEngine.fromJson({ ...world, revision: 2 ** 60 }), "INVALID_SNAPSHOT");
  throwsCode(() => PolicyEngine.fromJson({ ...world, revision: "1" }), "INVALID_SNAPSHOT");
  throwsCode(() => PolicyEngine.fromJson({ ...world, orgs: null }), "INVALID_SNAPSHOT");
  throwsCode(() => PolicyEngine.fromJson({ ...world, devices: [{ id: 5, name: "x", org: "acme" }] }), "INVALID_SNAPSHOT");
  throwsCode(() => PolicyEngine.fromJson(null), "INVALID_SNAPSHOT");
  throwsCode(() => PolicyEngine.fromJson(42), "INVALID_SNAPSHOT");
  throwsCode(() => PolicyEngine.fromJson(undefined), "INVALID_SNAPSHOT");
  throwsCode(() => PolicyEngine.fromJson({ ...world, revision: 10n }), "INVALID_SNAPSHOT");
  const cyclic = { format: "fleetgate/snapshot@1", revision: 1 };
  cyclic.self = cyclic;
  throwsCode(() => PolicyEngine.fromJson(cyclic), "INVALID_SNAPSHOT");
  let deep = [];
  for (let i = 0; i < 100000; i++) deep = [deep];
  throwsCode(() => PolicyEngine.fromJson({ format: "fleetgate/snapshot@1", revision: 1, orgs: deep }), "INVALID_SNAPSHOT");
  throwsCode(() => PolicyEngine.fromJson("[".repeat(100000)), "INVALID_JSON");
  throwsCode(() => PolicyEngine.fromJson("x".repeat(10 * 1024 * 1024)), "INVALID_JSON");
  const huge = { ...world, devices: [{ id: "big", name: "n".repeat(10 * 1024 * 1024), org: "nowhere" }] };
  throwsCode(() => PolicyEngine.fromJson(huge), "UNKNOWN_REFERENCE", "nowhere");
});

test("checks never throw on unknown or malformed ids", () => {
  const engine = PolicyEngine.fromJson(world);
  for (const id of [undefined, null, 42, {}, [], "", "x".repeat(10000), "ünïcode", "a\nb", "ghost"]) {
    assert.equal(engine.canView(id, "jones-cam"), false);
    assert.equal(engine.canControl("jones", id), false);
    assert.deepEqual(engine.visibleDevices(id), []);
    assert.deepEqual(engine.switchableOrgs(id), []);
    assert.deepEqual(engine.permissionsIn(id, "acme"), []);
    assert.deepEqual(engine.permissionsIn("ceo", id), []);
    assert.deepEqual(engine.filterDevices("ceo", [id, "lab-1"]), ["lab-1"]);
  }
  assert.deepEqual(engine.explain(42, "lab-1", "view"), { allowed: false, code: "DENY_UNKNOWN_USER" });
  assert.deepEqual(engine.explain("ceo", null, "view"), { allowed: false, code: "DENY_UNKNOWN_DEVICE" });
  throwsCode(() => engine.visibleDevices("ceo", { activeOrg: "globex" }), "NOT_SWITCHABLE", "globex");
  throwsCode(() => engine.visibleDevices("ceo", { activeOrg: 7 }), "NOT_SWITCHABLE");
  throwsCode(() => engine.explain("ceo", "lab-1", "fly"), "INVALID_ARGUMENT");
  throwsCode(() => engine.filterDevices("ceo", "lab-1"), "INVALID_ARGUMENT");
  healthy(engine);
});

test("filterDevices agrees with canView/canControl on long mixed lists, in input order", () => {
  const engine = PolicyEngine.fromJson(world);
  const known = world.devices.map((d) => d.id);
  const odd = [undefined, null, 7, {}, "", "x".repeat(129), "ünïcode", "a\nb", "ghost", "é".repeat(128)];
  // 20,000 ids: past the size where the wrapper reserves for the worst case, with duplicates.
  const list = Array.from({ length: 20000 }, (_, i) => (i % 7 === 3 ? odd[i % odd.length] : known[(i * 31) % known.length]));
  for (const user of ["ceo", "jones", "jones-kid", "ghost"]) {
    assert.deepEqual(engine.filterDevices(user, list), list.filter((d) => engine.canView(user, d)), user);
    assert.deepEqual(engine.filterDevices(user, list, "control"), list.filter((d) => engine.canControl(user, d)), user);
  }
  assert.ok(engine.filterDevices("ceo", list).length > 10000, "the admin keeps most of the list");
  // A short list after a long one still answers from the start of the buffer.
  assert.deepEqual(engine.filterDevices("jones-kid", ["jones-thermo", "jones-cam"]), ["jones-cam"]);
  healthy(engine);
});

test("bad deltas and commands leave the engine as it was", () => {
  const engine = PolicyEngine.fromJson(world);
  const before = JSON.stringify(engine.toJson());
  const move = { op: "putDevice", device: { id: "jones-cam", name: "Cam", org: "acme", owner: null } };
  throwsCode(() => engine.applyDelta({ format: "fleetgate/delta@1", from: 0, to: 2, ops: [move] }), "REVISION_MISMATCH");
  throwsCode(() => engine.applyDelta({ format: "fleetgate/delta@1", from: 1, to: 1, ops: [move] }), "INVALID_DELTA");
  throwsCode(() => engine.applyDelta({ format: "fleetgate/delta@1", from: 2, to: 1, ops: [] }), "INVALID_DELTA");
  throwsCode(() => engine.applyDelta({ format: "fleetgate/delta@1", from: 0, to: 0, ops: [] }), "REVISION_MISMATCH");
  throwsCode(() => engine.applyDelta({ format: "fleetgate/delta@1", from: 1, to: 2, ops: [{ op: "teleport" }] }), "INVALID_DELTA");
  throwsCode(() => engine.applyDelta("{"), "INVALID_JSON");
  throwsCode(() => engine.applyDelta(null), "INVALID_DELTA");
  const bad = { op: "putDevice", device: { id: "jones-cam", name: "Cam", org: "client-jones", owner: "kim" } };
  throwsCode(() => engine.applyDelta({ format: "fleetgate/delta@1", from: 1, to: 2, ops: [move, bad] }), "OWNER_NOT_MEMBER", "kim");
  throwsCode(() => engine.decide("ceo", { op: "moveDevice", device: "lab-1" }), "INVALID_COMMAND", "org");
  throwsCode(() => engine.decide("ceo", "nonsense"), "INVALID_COMMAND");
  throwsCode(() => engine.decide("ceo", null), "INVALID_COMMAND");
  throwsCode(() => engine.preview("ceo", { op: "moveDevice", device: "lab-1", org: "acme", extra: true }), "INVALID_COMMAND", "extra");
  throwsCode(() => engine.commandDelta("jones", { op: "invite", email: "x@y.z", org: "client-jones", role: "User" }), "INVALID_COMMAND", "userId");
  assert.equal(JSON.stringify(engine.toJson()), before);
  healthy(engine);
  // A preview changes nothing either.
  engine.preview("ceo", { op: "suspendOrg", org: "acme-eu" });
  assert.equal(JSON.stringify(engine.toJson()), before);
});

test("signed envelopes: errors carry their codes", () => {
  throwsCode(() => PolicyEngine.fromSigned({ format: "fleetgate/signed@1", keyId: "k9", payload: "e30", signature: "AA" }, {}), "UNKNOWN_KEY", "k9");
  throwsCode(() => PolicyEngine.fromSigned("{", {}), "INVALID_JSON");
  const key = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik";
  throwsCode(
    () => PolicyEngine.fromSigned({ format: "fleetgate/signed@1", keyId: "k1", payload: "e30", signature: "A".repeat(86) }, { k1: key }),
    "BAD_SIGNATURE",
  );
});

test("signed deltas and tokens: wrong argument types are INVALID_ARGUMENT, state is kept", () => {
  const engine = PolicyEngine.fromJson(world);
  assert.equal(engine.expiresAt, null, "a plain snapshot carries no signed expiry");
  for (const token of [undefined, null, 42, {}, ["a.b.c"]]) throwsCode(() => PolicyEngine.verifyToken(token, {}), "INVALID_ARGUMENT");
  throwsCode(() => PolicyEngine.verifyToken("a.b.c", {}, { now: "soon" }), "INVALID_ARGUMENT", "now");
  throwsCode(() => PolicyEngine.verifyToken("a.b.c", {}, { now: NaN }), "INVALID_ARGUMENT", "now");
  throwsCode(() => PolicyEngine.verifyToken("a.b.c", "keys"), "INVALID_ARGUMENT", "keys");
  throwsCode(() => PolicyEngine.verifyToken("a.b.c", { k1: 5 }), "INVALID_ARGUMENT", "keys");
  throwsCode(() => PolicyEngine.verifyToken("a.b", {}), "BAD_TOKEN");
  throwsCode(() => PolicyEngine.verifyToken("x".repeat(1 << 20), {}), "BAD_TOKEN");
  throwsCode(() => PolicyEngine.fromSigned("{}", {}, { now: Infinity }), "INVALID_ARGUMENT", "now");
  throwsCode(() => engine.applySignedDelta("{", {}), "INVALID_JSON");
  throwsCode(() => engine.applySignedDelta({}, {}), "INVALID_DELTA");
  throwsCode(() => engine.applySignedDelta(undefined, {}), "INVALID_DELTA");
  throwsCode(() => engine.applySignedDelta({ format: "fleetgate/signed@1", keyId: "k9", payload: "e30", signature: "AA" }, {}), "UNKNOWN_KEY", "k9");
  throwsCode(() => engine.applySignedDelta("{}", {}, { now: -1 }), "INVALID_ARGUMENT");
  throwsCode(() => engine.applySignedDelta("{}", {}, 5), "INVALID_ARGUMENT");
  assert.equal(engine.expiresAt, null);
  healthy(engine);
});

test("a freed engine and a fresh one are independent", () => {
  const a = PolicyEngine.fromJson(world);
  const b = PolicyEngine.fromJson(world);
  a.applyDelta({ format: "fleetgate/delta@1", from: 1, to: 2, ops: [{ op: "removeDevice", id: "jones-cam" }] });
  a.free();
  healthy(b);
});
