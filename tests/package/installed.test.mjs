// The package as a user gets it: `npm pack` of pkg/, the tarball installed into a scratch copy
// of tests/fixtures/, then each fixture run against the installed copy — Node ESM, Node CJS
// (`require`), TypeScript (`bundler`, `node16` from ESM and from CJS, `nodenext`), a Vite build
// loaded in Chromium, and workerd (the `workerd` condition) — plus publint and
// @arethetypeswrong/cli on the tarball.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { createServer } from "node:http";
import { createServer as netServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { launch } from "../browser/browser.mjs";
import { until } from "../sync/server.mjs";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = join(ROOT, "node_modules/.bin");
// What every fixture must print: the engine's answers on tests/fixtures/world.json.
const EXPECTED = {
  bob: ["thermo-1"],
  alice: ["lock-1", "thermo-1"],
  explain: "ALLOW_SUB_ORG",
  decide: "DENY_NO_PERMISSION",
  error: [true, "INVALID_JSON"],
  freed: "INVALID_ARGUMENT",
};

let dir; // the scratch fixtures, with node_modules/fleetgate installed from the tarball
let tarball;
const children = new Set();

const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 120000, ...opts });

before(() => {
  dir = mkdtempSync(join(tmpdir(), "fleetgate-installed-"));
  const packed = JSON.parse(run("npm", ["pack", "--json", "--pack-destination", dir], { cwd: join(ROOT, "pkg") }));
  tarball = join(dir, packed[0].filename);
  cpSync(join(ROOT, "tests/fixtures"), join(dir, "app"), { recursive: true });
  run("npm", ["install", "--no-save", "--no-package-lock", "--no-audit", "--no-fund", "--offline", tarball], { cwd: join(dir, "app") });
});

after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the tarball holds the package files, README, LICENSE and CHANGELOG, and one .wasm", () => {
  const files = JSON.parse(run("npm", ["pack", "--dry-run", "--json"], { cwd: join(ROOT, "pkg") }))[0].files.map((f) => f.path);
  for (const f of ["package.json", "README.md", "LICENSE", "CHANGELOG.md", "index.d.ts", "sync.d.ts", "node.mjs", "web.js", "workerd.js", "sync.js"]) {
    assert.ok(files.includes(f), `${f} in the tarball`);
  }
  assert.deepEqual(files.filter((f) => f.endsWith(".wasm")), ["web/fleetgate_bg.wasm"]);
  const installed = JSON.parse(readFileSync(join(dir, "app/node_modules/fleetgate/package.json"), "utf8"));
  assert.ok(installed.repository?.url && installed.homepage && installed.keywords?.length > 3, "repository, homepage, keywords");
  assert.equal(installed.license, "Apache-2.0");
  assert.match(readFileSync(join(dir, "app/node_modules/fleetgate/LICENSE"), "utf8"), /Apache License\s+Version 2\.0/);
  assert.doesNotMatch(readFileSync(join(dir, "app/node_modules/fleetgate/README.md"), "utf8"), /make run|\.\.\/shared|demo-password/);
});

test("publint and @arethetypeswrong/cli are clean", () => {
  const lint = run(join(BIN, "publint"), ["--strict"], { cwd: join(ROOT, "pkg") });
  assert.match(lint, /All good/, lint);
  // ESM only (documented): CommonJS-under-node16 and node10 resolutions are not targets.
  run(join(BIN, "attw"), [tarball, "--profile", "esm-only", "--exclude-entrypoints", "fleetgate_bg.wasm", "--format", "ascii"]);
});

test("Node ESM", () => {
  const out = JSON.parse(run(process.execPath, ["node-esm/index.mjs"], { cwd: join(dir, "app") }));
  assert.deepEqual(out, { ...EXPECTED, sync: true });
});

test("Node CommonJS (require)", () => {
  const out = JSON.parse(run(process.execPath, ["--no-warnings", "node-cjs/index.cjs"], { cwd: join(dir, "app") }));
  assert.deepEqual(out, { ...EXPECTED, sync: true });
});

for (const config of ["bundler", "node16", "nodenext", "node16-cjs"]) {
  test(`TypeScript, moduleResolution ${config}`, () => {
    try {
      run(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(dir, `app/ts/tsconfig.${config}.json`)]);
    } catch (e) {
      assert.fail(`tsc (${config}):\n${e.stdout}${e.stderr}`);
    }
  });
}

test("a TypeScript error in a consumer is reported (the fixture can fail)", () => {
  writeFileSync(join(dir, "app/ts/bad.ts"), 'import { PolicyEngine } from "fleetgate";\nPolicyEngine.fromJson("{}").decide("a", { op: "fly" });\n');
  writeFileSync(join(dir, "app/ts/tsconfig.bad.json"), JSON.stringify({ extends: "./tsconfig.bundler.json", files: ["bad.ts"] }));
  assert.throws(
    () => run(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(dir, "app/ts/tsconfig.bad.json")]),
    (e) => /"fly"/.test(e.stdout) && /bad\.ts/.test(e.stdout),
  );
});

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json" };

test("a Vite build, loaded in Chromium", async () => {
  const app = join(dir, "app/vite-app");
  run(process.execPath, [join(ROOT, "node_modules/vite/bin/vite.js"), "build", "--logLevel", "warn", "--base", "./"], { cwd: app });
  const dist = join(app, "dist");
  const assets = readdirSync(join(dist, "assets"));
  assert.equal(assets.filter((f) => f.endsWith(".wasm")).length, 1, `one .wasm asset: ${assets}`);
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    const file = join(dist, path === "/" ? "index.html" : path);
    if (!existsSync(file)) return res.writeHead(404).end();
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" }).end(readFileSync(file));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await page.waitForFunction(() => document.querySelector("#out")?.textContent !== "running", null, { timeout: 20000 });
    assert.deepEqual(errors, []);
    assert.deepEqual(JSON.parse(await page.textContent("#out")), { ...EXPECTED, sync: true });
  } finally {
    await browser.close();
    server.close();
  }
});

function freePort() {
  return new Promise((resolve, reject) => {
    const s = netServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

test("workerd, through the `workerd` export condition of the installed package", async () => {
  const pkgDir = join(dir, "app/node_modules/fleetgate");
  const manifest = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
  const entry = manifest.exports["."].workerd;
  assert.ok(entry, "a workerd condition");
  // The entry and every file it imports, named as relative imports resolve them.
  const modules = [`    (name = "fleetgate", esModule = embed "../node_modules/fleetgate/${entry.slice(2)}"),`];
  const seen = new Set();
  const visit = (rel) => {
    const src = readFileSync(join(pkgDir, rel), "utf8");
    for (const m of src.matchAll(/(?:from|import)\s+"\.\/([^"]+)"/g)) {
      const dep = normalize(join(dirname(rel), m[1]));
      if (seen.has(dep)) continue;
      seen.add(dep);
      const kind = dep.endsWith(".wasm") ? "wasm" : "esModule";
      modules.push(`    (name = "${dep}", ${kind} = embed "../node_modules/fleetgate/${dep}"),`);
      if (kind === "esModule") visit(dep);
    }
  };
  visit(entry.slice(2));
  const cfgDir = join(dir, "app/workerd");
  writeFileSync(join(cfgDir, "config.capnp"), readFileSync(join(cfgDir, "config.capnp.in"), "utf8").replace("@FILES@", modules.join("\n")));
  const port = await freePort();
  let log = "";
  const proc = spawn(join(BIN, "workerd"), ["serve", join(cfgDir, "config.capnp"), "--socket-addr", `http=127.0.0.1:${port}`], { stdio: ["ignore", "pipe", "pipe"] });
  children.add(proc);
  proc.stdout.on("data", (d) => (log += d));
  proc.stderr.on("data", (d) => (log += d));
  try {
    const res = await until(async () => {
      if (proc.exitCode !== null) return { exited: true };
      return await fetch(`http://127.0.0.1:${port}/`);
    }, "workerd listening", 30000);
    assert.ok(!res.exited, `workerd exited:\n${log}`);
    assert.equal(res.status, 200, log);
    assert.deepEqual(await res.json(), EXPECTED);
  } finally {
    proc.kill("SIGTERM");
    await new Promise((r) => (proc.exitCode !== null ? r() : proc.once("exit", r)));
  }
});
