// The package README's code runs: every ```js test block is run as an ES module in its own Node
// process against the built package (`fleetgate` resolves to pkg/), with assertions turned
// into failures; ```js test:server blocks run against a real seeded server (its address
// replaces the README's `http://127.0.0.1:8080`). The README also names every decision and
// error code of index.d.ts, and pkg/README.md is js/README.md.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "../sync/server.mjs";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const readme = readFileSync(join(ROOT, "pkg/README.md"), "utf8");
const blocks = [...readme.matchAll(/^```js (test(?::server)?)\n([\s\S]*?)^```$/gm)].map((m, i) => ({
  kind: m[1],
  code: m[2],
  line: readme.slice(0, m.index).split("\n").length,
  i,
}));

// console.assert only prints: make a false assertion fail the block.
const PRELUDE = `console.assert = (ok, ...msg) => { if (!ok) { console.error("assertion failed", ...msg); process.exit(3); } };\n`;

function run(code, env = {}) {
  return spawnSync(process.execPath, ["--input-type=module", "-e", PRELUDE + code], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 60000,
    env: { ...process.env, ...env },
  });
}

let dir;
let server;

before(async () => {
  if (!blocks.some((b) => b.kind === "test:server")) return;
  dir = mkdtempSync(join(tmpdir(), "fleetgate-readme-"));
  const world = JSON.parse(readFileSync(join(ROOT, "tests/vectors/manufacturer.json"), "utf8")).snapshot;
  for (const u of world.users) u.email = `${u.id}@example.test`;
  writeFileSync(join(dir, "seed.json"), JSON.stringify({ snapshot: world, passwords: { jones: "readme-password" } }));
  server = await startServer(["--seed", join(dir, "seed.json"), "--db", join(dir, "db"), "--listen", "127.0.0.1:0"]);
});

after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("pkg/README.md is js/README.md and has runnable blocks", () => {
  assert.equal(readme, readFileSync(join(ROOT, "js/README.md"), "utf8"));
  assert.ok(blocks.filter((b) => b.kind === "test").length >= 3, "at least three ```js test blocks");
  assert.ok(blocks.some((b) => b.kind === "test:server"), "a ```js test:server block");
});

test("the README names every decision and error code of index.d.ts", () => {
  const dts = readFileSync(join(ROOT, "pkg/index.d.ts"), "utf8");
  const union = (name) => {
    const m = dts.match(new RegExp(`export type ${name} =([\\s\\S]*?);`));
    return [...m[1].matchAll(/"([A-Z_]+)"/g)].map((x) => x[1]);
  };
  const codes = [...union("AllowCode"), ...union("DenyCode"), ...union("ErrorCode")];
  assert.ok(codes.length >= 34);
  for (const c of codes) assert.ok(readme.includes(`| \`${c}\` |`), `README table row for ${c}`);
});

for (const b of blocks) {
  test(`README block ${b.i + 1} (line ${b.line}, ${b.kind}) runs`, () => {
    let code = b.code;
    if (b.kind === "test:server") {
      assert.ok(code.includes("http://127.0.0.1:8080"), "the server block names the default address");
      code = code.replaceAll("http://127.0.0.1:8080", server.base);
    }
    const r = run(code);
    assert.equal(r.status, 0, `block at line ${b.line} failed:\n${r.stdout}\n${r.stderr}`);
  });
}
