// The permission labels come from the crate (SPEC §2, the seed's names), so no UI re-encodes them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PolicyEngine } from "fleetgate";

test("permissionLabels: every permission id of SPEC §2 with its seed name, ascending by id", () => {
  const labels = PolicyEngine.permissionLabels();
  const ids = Object.keys(labels);
  assert.equal(ids.length, 16);
  assert.deepEqual(ids, [...ids].sort());
  assert.equal(labels["devices.org.view"], "View Organization Devices");
  assert.equal(labels["devices.own.control"], "Control Own Devices");
  for (const id of ids) assert.ok(labels[id].length > 0, id);
  // Every permission an engine reports has a label.
  const engine = PolicyEngine.fromJson({
    format: "fleetgate/snapshot@1",
    revision: 1,
    orgs: [{ id: "acme", name: "ACME" }],
    users: [{ id: "a", email: "a@acme.test", name: "A", status: "active" }],
    memberships: [{ user: "a", org: "acme", role: "Admin" }],
  });
  assert.deepEqual(engine.permissionsIn("a", "acme"), ids);
  // A fresh object each call: callers may not change the crate's labels for others.
  labels["devices.add"] = "changed";
  assert.notEqual(PolicyEngine.permissionLabels()["devices.add"], "changed");
});
