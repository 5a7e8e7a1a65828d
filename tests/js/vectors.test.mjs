// Replays every conformance vector against the built package, through the Node entry
// (`import { PolicyEngine } from "fleetgate"`, no init) and through the web entry initialised
// from the .wasm bytes. Known divergences: none (the list below must stay empty).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { PolicyEngine as NodeEngine } from "fleetgate";
import initWeb, { PolicyEngine as WebEngine } from "fleetgate/web";
import { replay } from "./replay.js";

const dir = fileURLToPath(new URL("../vectors/", import.meta.url));
const files = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
const KNOWN_DIVERGENCES = [];

test("vectors exist", () => assert.ok(files.length > 0));

for (const f of files) {
  const file = JSON.parse(readFileSync(dir + f, "utf8"));
  test(`node entry: ${f}`, () => {
    const { cases, failures } = replay(NodeEngine, file, f);
    assert.ok(cases > 0);
    assert.deepEqual(failures.filter((m) => !KNOWN_DIVERGENCES.some((k) => m.includes(k))), []);
  });
  test(`web entry: ${f}`, async () => {
    await initWeb(readFileSync(new URL("../../pkg/web/fleetgate_bg.wasm", import.meta.url)));
    const { failures } = replay(WebEngine, file, f);
    assert.deepEqual(failures, []);
  });
}
