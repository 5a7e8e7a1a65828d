// Benchmarks the wasm package in Node on the generated large world (run by hand: `make bench-wasm`).
// Prints a table; never asserts on time.
import { readFileSync, existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { PolicyEngine } from "fleetgate";

const worldPath = new URL("../target/bench-world.json", import.meta.url);
if (!existsSync(worldPath)) {
  const json = execFileSync("cargo", ["run", "-q", "--release", "-p", "fleetgate-cli", "--", "generate"], { maxBuffer: 1 << 30 });
  (await import("node:fs")).writeFileSync(worldPath, json);
}
const text = readFileSync(worldPath, "utf8");
const world = JSON.parse(text);

const ROUNDS = 5;
const pretty = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : ns >= 1e3 ? `${(ns / 1e3).toFixed(2)} µs` : `${ns.toFixed(0)} ns`);

// Per-call time over `iterations` calls, in ROUNDS rounds: prints the median and the spread
// (this machine is shared and noisy; the median is the number to compare).
function time(label, iterations, fn) {
  for (let i = 0; i < Math.min(iterations, 1000); i++) fn(i); // warm up
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) fn(i);
    rounds.push(Number(process.hrtime.bigint() - t0) / iterations);
  }
  rounds.sort((a, b) => a - b);
  const median = rounds[ROUNDS >> 1];
  console.log(`${label.padEnd(48)} ${pretty(median).padStart(12)}   (${pretty(rounds[0])} – ${pretty(rounds[ROUNDS - 1])})`);
  return median;
}

const rows = [];
let engine;
console.log(`${"".padEnd(48)} ${"median".padStart(12)}   (min – max of ${ROUNDS} rounds)`);
time("load (fromJson, 10 MB text, 100k devices)", 2, () => {
  engine?.free();
  engine = PolicyEngine.fromJson(text);
});
time("load (fromJson, plain object)", 1, () => PolicyEngine.fromJson(world).free());

const leafMember = world.memberships.find((m) => m.role === "User" && world.devices.some((d) => d.owner === m.user));
const leaf = leafMember.user;
const leafDevice = world.devices.find((d) => d.owner === leaf).id;
const ids = world.devices.map((d) => d.id);
time("canView (root admin, sub-org grant)", 1_000_000, (i) => engine.canView("u000000", ids[i % ids.length]));
time("canView (leaf user, own device)", 1_000_000, () => engine.canView(leaf, leafDevice));
time("canView (leaf user, denied)", 1_000_000, (i) => engine.canView(leaf, ids[i % ids.length]));
time("explain (root admin)", 200_000, (i) => engine.explain("u000000", ids[i % ids.length], "control"));
time("visibleDevices leaf user", 200_000, () => engine.visibleDevices(leaf));
time("visibleDevices root admin (100k ids)", 50, () => engine.visibleDevices("u000000"));
const thousand = ids.filter((_, i) => i % 100 === 0).slice(0, 1000);
time("filterDevices 1,000 ids (root admin)", 2_000, () => engine.filterDevices("u000000", thousand));
time("filterDevices 1,000 ids (leaf user)", 2_000, () => engine.filterDevices(leaf, thousand));
const dev = world.devices.find((d) => d.owner === null);
const orgs = [dev.org, world.orgs.find((o) => o.id !== dev.org).id];
time("applyDelta (one device move)", 20_000, (i) => {
  const r = engine.revision;
  engine.applyDelta({ format: "fleetgate/delta@1", from: r, to: r + 1, ops: [{ op: "putDevice", device: { ...dev, org: orgs[i % 2] } }] });
});
time("project leaf user", 20_000, () => engine.project(leaf));
time("project root admin (100k devices)", 2, () => engine.project("u000000"));
const wasm = readFileSync(new URL("../pkg/web/fleetgate_bg.wasm", import.meta.url));
const { gzipSync } = await import("node:zlib");
console.log(`${".wasm size".padEnd(48)} ${(wasm.length / 1024).toFixed(1)} KiB raw, ${(gzipSync(wasm, { level: 9 }).length / 1024).toFixed(1)} KiB gzipped`);
