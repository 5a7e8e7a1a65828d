// The wrapper's id → slot caches (js/engine.js) stay right as deltas add, remove and re-add
// users and devices, and as failed deltas and previews intern ids they then forget: every
// answer equals the one of a fresh engine loaded from the same state.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { PolicyEngine } from "fleetgate";

const world = JSON.parse(readFileSync(new URL("../vectors/manufacturer.json", import.meta.url), "utf8")).snapshot;
const USERS = ["ceo", "jones", "jones-kid", "kim", "new-user", "ghost", "pending-pat"];
const DEVICES = ["lab-1", "jones-cam", "kim-plug", "new-dev", "ghost-dev", "garage-door"];

// Every check, list and filter of `e` equals that of a fresh engine from `e.toJson()`.
function assertFresh(e, when) {
  const fresh = PolicyEngine.fromJson(e.toJson());
  for (const u of USERS) {
    for (const d of DEVICES) {
      assert.equal(e.canView(u, d), fresh.canView(u, d), `${when}: canView(${u}, ${d})`);
      assert.equal(e.canControl(u, d), fresh.canControl(u, d), `${when}: canControl(${u}, ${d})`);
    }
    assert.deepEqual(e.visibleDevices(u), fresh.visibleDevices(u), `${when}: visibleDevices(${u})`);
    assert.deepEqual(e.filterDevices(u, DEVICES), fresh.filterDevices(u, DEVICES), `${when}: filterDevices(${u})`);
  }
  fresh.free();
}

const delta = (e, ops) => ({ format: "fleetgate/delta@1", from: e.revision, to: e.revision + 1, ops });

test("cached slots follow removals, additions and failed deltas", () => {
  const e = PolicyEngine.fromJson(world);
  assertFresh(e, "loaded"); // fills the caches, including misses for ids not there yet
  assert.equal(e.canView("ceo", "kim-plug"), true);

  e.applyDelta(delta(e, [{ op: "removeDevice", id: "kim-plug" }]));
  assert.equal(e.canView("ceo", "kim-plug"), false, "a removed device no longer resolves to anything visible");
  assert.deepEqual(e.filterDevices("ceo", ["kim-plug"]), []);
  assertFresh(e, "device removed");

  // A failed delta names new ids; they must not resolve afterwards.
  assert.throws(() =>
    e.applyDelta(delta(e, [
      { op: "putUser", user: { id: "new-user", email: "n@x.test", name: "N", status: "active" } },
      { op: "putDevice", device: { id: "new-dev", name: "N", org: "nowhere" } },
    ])),
  );
  assert.equal(e.canView("ceo", "new-dev"), false);
  assertFresh(e, "failed delta");
  // A preview interns and forgets ids too.
  e.preview("ceo", { op: "addDevice", id: "new-dev", name: "N", org: "acme" });
  assert.equal(e.canView("ceo", "new-dev"), false);

  e.applyDelta(delta(e, [
    { op: "putUser", user: { id: "new-user", email: "n@x.test", name: "N", status: "active" } },
    { op: "putMembership", membership: { user: "new-user", org: "client-kim", role: "Admin" } },
    { op: "putDevice", device: { id: "new-dev", name: "N", org: "client-kim", owner: null } },
    { op: "putDevice", device: { id: "kim-plug", name: "Plug", org: "client-kim", owner: "kim" } },
  ]));
  assert.equal(e.canView("new-user", "new-dev"), true, "ids added later resolve");
  assert.equal(e.canView("ceo", "kim-plug"), true, "a re-added device resolves again");
  assertFresh(e, "added");

  e.applyDelta(delta(e, [
    { op: "removeMembership", user: "new-user", org: "client-kim" },
    { op: "removeUser", id: "new-user" },
  ]));
  assert.equal(e.canView("new-user", "new-dev"), false, "a removed user no longer resolves");
  assert.deepEqual(e.visibleDevices("new-user"), []);
  assertFresh(e, "user removed");
  e.free();
});

test("ids that cannot be ids deny without throwing", () => {
  const e = PolicyEngine.fromJson(world);
  for (const bad of [undefined, null, 7, {}, "", "x".repeat(129), "kïm"]) {
    assert.equal(e.canView(bad, "lab-1"), false);
    assert.equal(e.canView("ceo", bad), false);
    assert.deepEqual(e.visibleDevices(bad), []);
  }
  assert.deepEqual(e.filterDevices("ceo", ["lab-1", 7, null, "", "ghost", "lab-1"]), ["lab-1", "lab-1"]);
  e.free();
});

test("the every-device list is a fresh copy and follows deltas", () => {
  const one = { ...world, orgs: world.orgs.filter((o) => o.id !== "globex").map((o) => ({ ...o, suspended: false })), devices: world.devices.filter((d) => d.org !== "globex"), memberships: world.memberships.filter((m) => m.org !== "globex"), users: world.users.filter((u) => u.id !== "globex-admin") };
  const e = PolicyEngine.fromJson(one);
  const all = e.visibleDevices("ceo");
  assert.equal(all.length, one.devices.length, "the root admin sees every device");
  all.push("mutated");
  assert.deepEqual(e.visibleDevices("ceo"), all.slice(0, -1), "callers get a copy");
  e.applyDelta(delta(e, [{ op: "putDevice", device: { id: "aaa-new", name: "N", org: "acme", owner: null } }]));
  assert.deepEqual(e.visibleDevices("ceo"), ["aaa-new", ...all.slice(0, -1)]);
  e.applyDelta(delta(e, [{ op: "removeDevice", id: "lab-1" }]));
  assertFresh(e, "after the every-device list");
  assert.ok(!e.visibleDevices("ceo").includes("lab-1"));
  e.free();
});

test("a user's status change after a delta shows at once, both ways", () => {
  const e = PolicyEngine.fromJson(world);
  const pat = { id: "pending-pat", email: "pending-pat@example.test", name: "Pending Pat" };
  const list = [...DEVICES, "north-stock-1"]; // pending-pat is Staff in dist-north
  const seen = (u) => [e.visibleDevices(u).length, e.filterDevices(u, list).length, list.filter((d) => e.canView(u, d)).length];
  assert.deepEqual(seen("pending-pat"), [0, 0, 0], "a pending user sees nothing");
  assertFresh(e, "pending"); // the wrapper now knows pending-pat as not active

  e.applyDelta(delta(e, [{ op: "putUser", user: { ...pat, status: "active" } }]));
  assert.ok(seen("pending-pat").every((n) => n > 0), "accepting the invitation lets the Staff membership count");
  assertFresh(e, "activated");

  assert.ok(seen("jones").every((n) => n > 0));
  e.applyDelta(delta(e, [{ op: "putUser", user: { id: "jones", email: "jones@example.test", name: "Jones", status: "suspended" } }]));
  assert.deepEqual(seen("jones"), [0, 0, 0], "a suspended user sees nothing");
  assertFresh(e, "suspended");
  e.free();
});
