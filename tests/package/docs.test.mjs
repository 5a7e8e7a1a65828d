// The package's API docs build: TypeDoc (typedoc.json: pkg/index.d.ts, sync.d.ts, react.d.ts,
// the package README as the front page) with warnings as errors, one page per entry point.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

test("TypeDoc builds the API docs of every entry point without errors or warnings", () => {
  const out = mkdtempSync(join(tmpdir(), "fleetgate-docs-"));
  try {
    const r = spawnSync(process.execPath, [join(ROOT, "node_modules/typedoc/bin/typedoc"), "--out", out], { cwd: ROOT, encoding: "utf8", timeout: 120000 });
    const log = `${r.stdout}${r.stderr}`;
    assert.equal(r.status, 0, log);
    assert.doesNotMatch(log, /\[(warning|error)\]/, log);
    for (const m of ["fleetgate", "fleetgate_sync", "fleetgate_react"]) assert.ok(existsSync(join(out, `modules/${m}.html`)), `a page for ${m}\n${log}`);
    const react = readFileSync(join(out, "modules/fleetgate_react.html"), "utf8");
    for (const name of ["FleetgateProvider", "useCan", "useVisibleDevices", "useDecision"]) assert.match(react, new RegExp(name));
    assert.match(readFileSync(join(out, "classes/fleetgate.PolicyEngine.html"), "utf8"), /visibleDevices/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
