// fleetgate/react in Node (server rendering: each hook's getServerSnapshot is its getSnapshot).
// Live re-rendering on deltas, in a real DOM, is checked in Chromium from the packed tarball
// (tests/package/installed.test.mjs, the React fixture).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createElement as h } from "react";
import { renderToString } from "react-dom/server";
import { PolicyEngine, isFleetgateError } from "fleetgate";
import { FleetgateProvider, useCan, useDecision, useExplain, useFleetgate, useVisibleDevices } from "fleetgate/react";

const world = readFileSync(new URL("../fixtures/world.json", import.meta.url), "utf8");

function Probe() {
  const out = {
    view: useCan("bob", "thermo-1"),
    control: useCan("bob", "thermo-1", "control"),
    lock: useCan("bob", "lock-1"),
    explain: useExplain("alice", "thermo-1", "control")?.code ?? null,
    devices: useVisibleDevices("alice"),
    remove: useDecision("bob", { op: "removeDevice", device: "thermo-1" }),
    none: useDecision("bob", null),
    state: (({ revision, pending, status }) => ({ revision, pending, status }))(useFleetgate()),
  };
  return h("pre", null, JSON.stringify(out));
}

const render = (props) => JSON.parse(renderToString(h(FleetgateProvider, props, h(Probe))).replace(/^<pre>|<\/pre>$/g, "").replaceAll("&quot;", '"'));

test("the hooks answer from a fixed engine", () => {
  const engine = PolicyEngine.fromJson(world);
  const out = render({ engine });
  assert.deepEqual(out, {
    view: true,
    control: true, // Staff of east: devices.org.control
    lock: false,
    explain: "ALLOW_SUB_ORG",
    devices: ["lock-1", "thermo-1"],
    remove: engine.decide("bob", { op: "removeDevice", device: "thermo-1" }),
    none: null,
    state: { revision: 1, pending: false, status: "live" },
  });
  assert.equal(out.remove.code, "DENY_NO_PERMISSION");
  engine.free();
});

test("a source (sync-like) is read at render time; no engine and a freed engine read as empty", () => {
  const engine = PolicyEngine.fromJson(world);
  const source = { engine: null, pending: false, status: "loading", subscribe: () => () => {} };
  const empty = { view: false, control: false, lock: false, explain: null, devices: [], remove: null, none: null };
  assert.deepEqual(render({ sync: source }), { ...empty, state: { revision: null, pending: false, status: "loading" } });
  source.engine = engine;
  source.status = "live";
  assert.equal(render({ sync: source }).view, true);
  engine.applyDelta({ format: "fleetgate/delta@1", from: 1, to: 2, ops: [{ op: "removeMembership", user: "bob", org: "east" }] });
  const after = render({ sync: source });
  assert.equal(after.view, false);
  assert.equal(after.state.revision, 2);
  engine.free();
  assert.deepEqual(render({ engine }), { ...empty, state: { revision: null, pending: false, status: "idle" } });
});

test("misuse throws INVALID_ARGUMENT", () => {
  const code = (fn) => {
    try {
      fn();
    } catch (e) {
      return isFleetgateError(e) ? e.code : String(e);
    }
    return "no error";
  };
  assert.equal(code(() => renderToString(h(Probe))), "INVALID_ARGUMENT", "no provider");
  assert.equal(code(() => renderToString(h(FleetgateProvider, {}, h(Probe)))), "INVALID_ARGUMENT", "neither sync nor engine");
  assert.equal(code(() => renderToString(h(FleetgateProvider, { sync: {} }, h(Probe)))), "INVALID_ARGUMENT", "a sync without subscribe");
});
