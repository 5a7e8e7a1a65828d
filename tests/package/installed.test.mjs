// The package as a user gets it: `npm pack` of pkg/, the tarball installed into a scratch copy
// of tests/fixtures/ (with React, its optional peer, linked from the repository's node_modules), then each fixture run
// against the installed copy — Node ESM, Node CJS (`require`), TypeScript (`bundler`, `node16`
// from ESM and from CJS, `nodenext`, a React consumer), a Vite build and a webpack 5 build
// loaded in Chromium, a React app (fleetgate/react over fleetgate/sync) built by Vite and served
// by the Vite dev server in Chromium (a screenshot in artifacts/), and workerd (the `workerd`
// condition) — plus publint and @arethetypeswrong/cli on the tarball. The build tools (vite,
// @vitejs/plugin-react, webpack) and React are the repository's, linked into the scratch node_modules.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync, existsSync } from "node:fs";
import { createServer } from "node:http";
import { createServer as netServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { launch } from "../browser/browser.mjs";
import { until } from "../sync/server.mjs";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = join(ROOT, "node_modules/.bin");
const ARTIFACTS = join(ROOT, "artifacts");
const DEV = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).devDependencies;
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
  // The tarball alone: it has no dependencies, and React is an optional peer, so this needs
  // nothing from the registry.
  run("npm", ["install", "--no-save", "--no-package-lock", "--no-audit", "--no-fund", "--offline", tarball], { cwd: join(dir, "app") });
  // React next to the package, as an app has it (the peer), and the build tools: the
  // repository's pinned copies (`npm ci` installed them from the lockfile; npm's cache holds
  // their tarballs but not the registry metadata an install by name asks for, so a fresh
  // machine could not install them offline).
  for (const p of ["react", "react-dom", "@types/react"]) assert.ok(DEV[p], `${p} is a devDependency`);
  for (const tool of ["react", "react-dom", "@types/react", "vite", "@vitejs/plugin-react"]) {
    mkdirSync(dirname(join(dir, "app/node_modules", tool)), { recursive: true });
    symlinkSync(join(ROOT, "node_modules", tool), join(dir, "app/node_modules", tool), "dir");
  }
});

let browser = null;
const chromium = async () => (browser ??= await launch());

after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  await browser?.close();
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

for (const config of ["bundler", "node16", "nodenext", "node16-cjs", "react"]) {
  test(config === "react" ? "TypeScript, a React consumer of fleetgate/react (bundler, react-jsx)" : `TypeScript, moduleResolution ${config}`, () => {
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

// Serves a directory on loopback; resolves to { url, close }.
async function serveDir(root) {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    const file = join(root, path === "/" ? "index.html" : path);
    if (!existsSync(file) || !statSync(file).isFile()) return res.writeHead(404).end();
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" }).end(readFileSync(file));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}/`, close: () => new Promise((r) => server.close(r)) };
}

// Loads a page printing check.js's answers into #out and compares them with the expected ones.
async function expectCheckPage(url) {
  const page = await (await chromium()).newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  try {
    await page.goto(url);
    await page.waitForFunction(() => document.querySelector("#out")?.textContent !== "running", null, { timeout: 20000 });
    assert.deepEqual(errors, []);
    assert.deepEqual(JSON.parse(await page.textContent("#out")), { ...EXPECTED, sync: true });
  } finally {
    await page.close();
  }
}

test("a Vite build, loaded in Chromium", async () => {
  const app = join(dir, "app/vite-app");
  run(process.execPath, [join(ROOT, "node_modules/vite/bin/vite.js"), "build", "--logLevel", "warn", "--base", "./"], { cwd: app });
  const dist = join(app, "dist");
  const assets = readdirSync(join(dist, "assets"));
  assert.equal(assets.filter((f) => f.endsWith(".wasm")).length, 1, `one .wasm asset: ${assets}`);
  const server = await serveDir(dist);
  try {
    await expectCheckPage(server.url);
  } finally {
    await server.close();
  }
});

test("a webpack 5 build (no wasm configuration: the .wasm is an asset/resource), loaded in Chromium", async () => {
  const app = join(dir, "app/webpack-app");
  const { default: webpack } = await import("webpack");
  const { default: config } = await import(join(app, "webpack.config.js"));
  const stats = await new Promise((resolve, reject) => webpack(config, (err, st) => (err ? reject(err) : resolve(st))));
  assert.ok(!stats.hasErrors() && !stats.hasWarnings(), stats.toString({ colors: false, modules: false }));
  const dist = join(app, "dist");
  const files = readdirSync(dist);
  assert.equal(files.filter((f) => f.endsWith(".wasm")).length, 1, `one .wasm asset: ${files}`);
  cpSync(join(app, "index.html"), join(dist, "index.html"));
  const server = await serveDir(dist);
  try {
    await expectCheckPage(server.url);
  } finally {
    await server.close();
  }
});

// ---- the React fixture: fleetgate/react over fleetgate/sync (a fake server in the page) --------

const rendered = (page) =>
  page.evaluate(() => ({
    revision: document.querySelector("#revision")?.textContent,
    status: document.querySelector("#status")?.textContent,
    devices: [...document.querySelectorAll("#devices li")].map((li) => {
      const button = li.querySelector("button");
      return {
        id: li.dataset.device,
        bob: /bob can view/.test(li.textContent),
        disabled: button.disabled,
        code: button.dataset.code,
        reason: li.querySelector(".reason")?.textContent ?? null,
      };
    }),
  }));

const row = (id, bob, code, reason = code === "ALLOW" ? null : code) => ({ id, bob, disabled: code !== "ALLOW", code, reason });
const world = () => JSON.parse(readFileSync(join(ROOT, "tests/fixtures/world.json"), "utf8"));

async function expectReactApp(url, name) {
  const page = await (await chromium()).newPage({ viewport: { width: 760, height: 300 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  const settle = (revision) =>
    page.waitForFunction((r) => document.querySelector("#revision")?.textContent === r && document.querySelector("#status")?.textContent === "live", revision, {
      timeout: 20000,
    });
  try {
    await page.goto(url);
    await settle("1");
    // alice sees both devices; bob (Staff of east) sees thermo-1 only and may remove neither: the
    // decision names the permission he lacks (devices.remove).
    assert.deepEqual(await rendered(page), {
      revision: "1",
      status: "live",
      devices: [row("lock-1", false, "DENY_NO_PERMISSION", "DENY_NO_PERMISSION (needs devices.remove)"), row("thermo-1", true, "DENY_NO_PERMISSION", "DENY_NO_PERMISSION (needs devices.remove)")],
    });
    assert.equal(await page.locator('[data-device="thermo-1"] button').isDisabled(), true);
    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, `package-react-${name}.png`);
    rmSync(shot, { force: true });
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(statSync(shot).size > 1000, "a screenshot was written");

    // A delta from the "server": a new device, and bob becomes Admin of east.
    await page.evaluate((d) => window.fleet.delta(d), {
      format: "fleetgate/delta@1",
      from: 1,
      to: 2,
      ops: [
        { op: "putDevice", device: { id: "cam-1", name: "Camera", org: "east", owner: null } },
        { op: "putMembership", membership: { user: "bob", org: "east", role: "Admin" } },
      ],
    });
    await settle("2");
    assert.deepEqual((await rendered(page)).devices, [row("cam-1", true, "ALLOW"), row("lock-1", false, "DENY_NO_PERMISSION", "DENY_NO_PERMISSION (needs devices.remove)"), row("thermo-1", true, "ALLOW")]);

    // A reload (resync): a new engine replaces the visible one, which is then freed.
    const next = world();
    next.revision = 7;
    next.devices = next.devices.filter((d) => d.id !== "lock-1");
    await page.evaluate((s) => window.fleet.resync(s), next);
    await settle("7");
    assert.deepEqual((await rendered(page)).devices, [row("thermo-1", true, "DENY_NO_PERMISSION", "DENY_NO_PERMISSION (needs devices.remove)")]);
    assert.deepEqual(await page.evaluate(() => window.fleet.errors), []);
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
}

test("React (fleetgate/react) in a Vite build, in Chromium: the device list and greyed-out buttons follow deltas and a reload", async () => {
  const app = join(dir, "app/react-app");
  run(process.execPath, [join(ROOT, "node_modules/vite/bin/vite.js"), "build", "--logLevel", "warn", "--base", "./"], { cwd: app });
  const server = await serveDir(join(app, "dist"));
  try {
    await expectReactApp(server.url, "vite-build");
  } finally {
    await server.close();
  }
});

test("React in the Vite dev server, in Chromium", async () => {
  const port = await freePort();
  let log = "";
  const proc = spawn(process.execPath, [join(ROOT, "node_modules/vite/bin/vite.js"), "--host", "127.0.0.1", "--port", String(port), "--strictPort"], {
    cwd: join(dir, "app/react-app"),
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(proc);
  proc.stdout.on("data", (d) => (log += d));
  proc.stderr.on("data", (d) => (log += d));
  try {
    const url = `http://127.0.0.1:${port}/`;
    const res = await until(async () => (proc.exitCode !== null ? { exited: true } : await fetch(url)), "the Vite dev server", 30000);
    assert.ok(!res.exited, `vite exited:\n${log}`);
    assert.equal(res.status, 200, log);
    await expectReactApp(url, "vite-dev");
    assert.doesNotMatch(log, /error/i, log);
  } finally {
    proc.kill("SIGTERM");
    await new Promise((r) => (proc.exitCode !== null ? r() : proc.once("exit", r)));
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
