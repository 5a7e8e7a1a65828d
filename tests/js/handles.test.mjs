// Safe handles: after free() every member of a PolicyEngine throws a FleetgateError with code
// INVALID_ARGUMENT and touches no wasm memory (the heap is compared byte for byte around the
// calls); free() twice is harmless; `Symbol.dispose` frees; errors are FleetgateError instances.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { PolicyEngine, FleetgateError, isFleetgateError } from "fleetgate";
// The package's own wasm-bindgen module: the same instance the `fleetgate` entry uses.
import * as raw from "../../pkg/web/fleetgate.js";

const world = JSON.parse(readFileSync(new URL("../vectors/manufacturer.json", import.meta.url), "utf8")).snapshot;

// Every member of the prototype, with arguments that would reach the wasm core when live.
const calls = {
  revision: (e) => e.revision,
  expiresAt: (e) => e.expiresAt,
  canView: (e) => e.canView("jones-kid", "jones-cam"),
  canControl: (e) => e.canControl("jones", "jones-cam"),
  explain: (e) => e.explain("jones", "jones-cam", "view"),
  visibleDevices: (e) => e.visibleDevices("ceo"),
  filterDevices: (e) => e.filterDevices("ceo", Array.from({ length: 5000 }, (_, i) => `lab-${i}`)),
  switchableOrgs: (e) => e.switchableOrgs("ceo"),
  permissionsIn: (e) => e.permissionsIn("ceo", "acme"),
  decide: (e) => e.decide("ceo", { op: "removeDevice", device: "lab-1" }),
  preview: (e) => e.preview("ceo", { op: "removeDevice", device: "lab-1" }),
  commandDelta: (e) => e.commandDelta("ceo", { op: "removeDevice", device: "lab-1" }),
  applyDelta: (e) => e.applyDelta({ format: "fleetgate/delta@1", from: 1, to: 2, ops: [] }),
  applySignedDelta: (e) => e.applySignedDelta("{}", { k1: "x" }),
  project: (e) => e.project("ceo"),
  toJson: (e) => e.toJson(),
};

function members() {
  return Object.getOwnPropertyNames(PolicyEngine.prototype).filter((n) => n !== "constructor" && n !== "freed" && n !== "free");
}

function throwsFreed(fn, name) {
  let err = null;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err, `${name} did not throw on a freed engine`);
  assert.ok(err instanceof FleetgateError, `${name}: a FleetgateError`);
  assert.ok(isFleetgateError(err));
  assert.equal(err.code, "INVALID_ARGUMENT", `${name}: ${err.message}`);
  assert.match(err.message, /freed/);
}

test("the test covers every member of the prototype", () => {
  assert.deepEqual(members().sort(), Object.keys(calls).sort());
});

test("after free() every member throws INVALID_ARGUMENT and wasm memory is untouched", () => {
  const freed = PolicyEngine.fromJson(world);
  for (const [name, call] of Object.entries(calls)) {
    if (name !== "applyDelta" && name !== "applySignedDelta") call(freed); // live: these work
  }
  freed.free();
  assert.equal(freed.freed, true);
  // A successor takes the freed allocation (the allocator reuses it): any write through a stale
  // scratch pointer would land in its memory.
  const other = PolicyEngine.fromJson(world);
  const memory = raw.wasmMemory();
  const before = new Uint8Array(memory.buffer).slice();
  for (const [name, call] of Object.entries(calls)) throwsFreed(() => call(freed), name);
  const after = new Uint8Array(memory.buffer);
  assert.equal(after.length, before.length, "no memory growth");
  let changed = 0;
  for (let i = 0; i < before.length; i++) if (before[i] !== after[i]) changed++;
  assert.equal(changed, 0, `${changed} bytes of wasm memory changed by calls on a freed engine`);
  // The successor is intact.
  assert.equal(other.canView("jones-kid", "jones-cam"), true);
  assert.deepEqual(other.visibleDevices("jones"), ["garage-door", "jones-cam", "jones-lock", "jones-thermo"]);
  other.free();
});

test("free() twice is harmless, and Symbol.dispose frees", () => {
  const e = PolicyEngine.fromJson(world);
  assert.equal(e.freed, false);
  e.free();
  e.free();
  assert.equal(e.freed, true);
  const d = PolicyEngine.fromJson(world);
  assert.equal(typeof d[Symbol.dispose], "function");
  d[Symbol.dispose]();
  assert.equal(d.freed, true);
  throwsFreed(() => d.canView("jones", "jones-cam"), "canView after dispose");
  d[Symbol.dispose]();
  // Many engines created and freed: no leak of handles into each other.
  for (let i = 0; i < 50; i++) {
    const x = PolicyEngine.fromJson(world);
    assert.equal(x.canView("jones-kid", "jones-cam"), true);
    x.free();
    throwsFreed(() => x.filterDevices("ceo", ["lab-1"]), "filterDevices");
  }
});

test("errors of the core arrive as FleetgateError instances with their code", () => {
  const cases = [
    [() => PolicyEngine.fromJson("{"), "INVALID_JSON"],
    [() => PolicyEngine.fromJson({ ...world, extra: 1 }), "INVALID_SNAPSHOT"],
    [() => PolicyEngine.fromSigned("{}", {}), "INVALID_SNAPSHOT"],
    [() => PolicyEngine.verifyToken("a.b", {}), "BAD_TOKEN"],
  ];
  const e = PolicyEngine.fromJson(world);
  cases.push(
    [() => e.applyDelta({ format: "fleetgate/delta@1", from: 7, to: 8, ops: [] }), "REVISION_MISMATCH"],
    [() => e.decide("ceo", { op: "fly" }), "INVALID_COMMAND"],
    [() => e.visibleDevices("ceo", { activeOrg: "globex" }), "NOT_SWITCHABLE"],
    [() => e.explain("ceo", "lab-1", "fly"), "INVALID_ARGUMENT"],
  );
  for (const [fn, code] of cases) {
    let err = null;
    try {
      fn();
    } catch (x) {
      err = x;
    }
    assert.ok(err instanceof FleetgateError, `${code}: ${err}`);
    assert.ok(err instanceof Error);
    assert.equal(err.name, "FleetgateError");
    assert.equal(err.code, code, err.message);
    assert.match(err.stack, /^FleetgateError/);
  }
  assert.equal(isFleetgateError(new Error("x")), false);
  assert.equal(isFleetgateError({ name: "FleetgateError", code: "X" }), false);
  assert.equal(isFleetgateError(new FleetgateError("EXPIRED", "past")), true);
  e.free();
});
