// Object-shaped values leave the wasm core as plain JS values (serde-wasm-bindgen's
// JSON-compatible serializer, src/wasm.rs): plain objects and arrays only (no Map, no BigInt, no
// undefined), integers as numbers, `null` where JSON has null — so each value deep-equals the
// JSON of the same engine's answer written as text, which is what the server sends.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { PolicyEngine } from "fleetgate";

const world = JSON.parse(readFileSync(new URL("../vectors/manufacturer.json", import.meta.url), "utf8")).snapshot;

/** Throws unless `v` is made of JSON values only: plain objects, arrays, strings, finite numbers, booleans, null. */
function assertJsonShaped(v, at = "$") {
  if (v === null || typeof v === "string" || typeof v === "boolean") return;
  if (typeof v === "number") return assert.ok(Number.isFinite(v), `${at} is a finite number`);
  assert.equal(typeof v, "object", `${at} is a JSON value (got ${typeof v})`);
  if (Array.isArray(v)) return v.forEach((x, i) => assertJsonShaped(x, `${at}[${i}]`));
  assert.equal(Object.getPrototypeOf(v), Object.prototype, `${at} is a plain object`);
  for (const [k, x] of Object.entries(v)) {
    assert.notEqual(x, undefined, `${at}.${k} is not undefined`);
    assertJsonShaped(x, `${at}.${k}`);
  }
}

const shaped = (v) => {
  assertJsonShaped(v);
  assert.deepEqual(v, JSON.parse(JSON.stringify(v)));
  return v;
};

test("decisions, previews, deltas, projections and snapshots are plain JSON-shaped values", () => {
  const e = PolicyEngine.fromJson({ ...world, issuedAt: 1_700_000_000, expiresAt: 1_900_000_000 });
  const move = { op: "moveDevice", device: "jones-thermo", org: "acme" };
  const values = {
    allow: e.explain("ceo", "lab-1", "view"),
    deny: e.explain("north-staff", "south-1", "view"),
    decide: e.decide("ceo", move),
    denied: e.decide("jones-kid", move),
    preview: e.preview("ceo", move),
    delta: e.commandDelta("ceo", move),
    invite: e.commandDelta("ceo", { op: "invite", email: "new@example.test", org: "acme", role: "Staff", userId: "new" }),
    project: e.project("jones"),
    toJson: e.toJson(),
  };
  for (const [name, v] of Object.entries(values)) {
    assert.doesNotThrow(() => shaped(v), name);
  }
  // Integers are numbers, absent optionals are absent, a full snapshot's viewer is null.
  assert.equal(typeof values.toJson.revision, "number");
  assert.equal(values.toJson.issuedAt, 1_700_000_000);
  assert.equal(values.toJson.viewer, null);
  assert.ok("viewer" in values.toJson && "owner" in values.toJson.devices[0]);
  assert.equal(values.project.viewer, "jones");
  assert.equal(values.delta.from, 1);
  assert.ok(!("role" in values.deny), "a denied check names no role");
  // Role tables are plain objects keyed by role name.
  const acme = values.project.orgs.find((o) => o.roles);
  assert.ok(acme && Array.isArray(acme.roles.Admin));
  // Reloading what came out gives the same snapshot.
  const again = PolicyEngine.fromJson(values.toJson);
  assert.deepEqual(again.toJson(), values.toJson);
  again.free();
  e.free();
});

test("a snapshot without issuedAt/expiresAt has neither key", () => {
  const e = PolicyEngine.fromJson(world);
  const out = e.toJson();
  assert.ok(!("issuedAt" in out) && !("expiresAt" in out));
  assert.deepEqual(Object.keys(out), ["format", "revision", "viewer", "orgs", "users", "memberships", "devices"]);
  e.free();
});
