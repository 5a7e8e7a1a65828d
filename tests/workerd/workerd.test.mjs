// The package in workerd (SPEC §6, §8): starts the real workerd from the npm package with
// config.capnp — the package's `workerd` entry as the module "fleetgate", its one `.wasm` as a
// wasm module — and replays every conformance vector file inside it, no init call.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const WORKERD = here("../../node_modules/.bin/workerd");
const CONFIG = here("./config.capnp");
const files = readdirSync(here("../vectors/")).filter((f) => f.endsWith(".json")).sort();

let child = null;
let base = "";
let log = "";

/** A free loopback port (there is a tiny window before workerd takes it: retried below). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function start() {
  const port = await freePort();
  const proc = spawn(WORKERD, ["serve", CONFIG, "--socket-addr", `http=127.0.0.1:${port}`], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  proc.stdout.on("data", (d) => (log += d));
  proc.stderr.on("data", (d) => (log += d));
  const exited = new Promise((resolve) => proc.once("exit", (code) => resolve(code)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    const gone = await Promise.race([exited, new Promise((r) => setTimeout(() => r(undefined), 100))]);
    if (gone !== undefined) return { proc: null, url, code: gone };
    try {
      await fetch(`${url}/healthz`);
      return { proc, url };
    } catch {
      // not listening yet
    }
  }
  proc.kill("SIGKILL");
  throw new Error(`workerd did not start listening within 30 s:\n${log}`);
}

before(async () => {
  for (let attempt = 0; attempt < 3 && child === null; attempt++) {
    const r = await start();
    if (r.proc) {
      child = r.proc;
      base = r.url;
    } else if (!/address already in use/i.test(log)) {
      throw new Error(`workerd exited with ${r.code}:\n${log}`);
    }
  }
  assert.ok(child, `workerd did not start:\n${log}`);
});

after(async () => {
  if (child && child.exitCode === null) {
    const gone = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
    await gone;
    clearTimeout(timer);
  }
});

test("the package resolves workerd first and carries one .wasm", () => {
  const pkg = JSON.parse(readFileSync(here("../../pkg/package.json"), "utf8"));
  const conditions = Object.keys(pkg.exports["."]).filter((k) => k !== "types");
  assert.deepEqual(conditions, ["workerd", "node", "worker", "browser", "default"]);
  assert.equal(pkg.exports["."].workerd, "./workerd.js");
  assert.equal(pkg.exports["./fleetgate_bg.wasm"], "./web/fleetgate_bg.wasm");
  assert.match(readFileSync(here("../../pkg/workerd.js"), "utf8"), /import wasmModule from "\.\/web\/fleetgate_bg\.wasm"/);
});

test("config.capnp lists every vector file", () => {
  const config = readFileSync(CONFIG, "utf8");
  for (const f of files) assert.ok(config.includes(`"vectors/${f}"`), `config.capnp does not list vectors/${f}`);
});

test("every vector passes in workerd through `import { PolicyEngine } from \"fleetgate\"`", async () => {
  const res = await fetch(`${base}/replay?files=${files.join(",")}`);
  assert.equal(res.status, 200, log);
  const { files: results } = await res.json();
  assert.deepEqual(Object.keys(results).sort(), files);
  let cases = 0;
  const failures = [];
  for (const f of files) {
    cases += results[f].cases;
    failures.push(...results[f].failures);
    assert.ok(results[f].cases > 0, `${f}: no cases ran`);
  }
  assert.deepEqual(failures, []);
  assert.ok(results["signed.json"].cases >= 50, "signed.json ran");
  assert.ok(cases >= 600, `only ${cases} cases ran`);
  console.log(`workerd: ${cases} vector cases from ${files.length} files passed`);
});
