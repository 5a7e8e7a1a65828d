// Benchmarks the object-shaped calls of the wasm package in Node (run by hand: `make
// bench-boundary`): decisions, previews, deltas, projections and snapshots, on the generated
// 100k-device world and on the small manufacturer world of the vectors. Prints a table; never
// asserts on time.
//
// Both ways in one process: `FLEETGATE_ALT=path/to/other/pkg node bench/boundary.mjs` loads a
// second build of the package (e.g. one whose `to_js` in src/wasm.rs writes JSON text and
// `JSON.parse`s it, the path before serde-wasm-bindgen) and times each call on both, round by
// round interleaved, so the machine's noise hits both alike. Columns: the median of each build
// and their ratio (this build / the other).
import { readFileSync, existsSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { pathToFileURL } from "node:url";
import { resolve } from "node:path";
import { PolicyEngine } from "fleetgate";

const ALT = process.env.FLEETGATE_ALT;
const Alt = ALT ? (await import(pathToFileURL(resolve(ALT, "node.mjs")).href)).PolicyEngine : null;

const worldPath = new URL("../target/bench-world.json", import.meta.url);
if (!existsSync(worldPath)) {
  const json = execFileSync("cargo", ["run", "-q", "--release", "-p", "fleetgate-cli", "--", "generate"], { maxBuffer: 1 << 30 });
  writeFileSync(worldPath, json);
}
const bigText = readFileSync(worldPath, "utf8");
const big = JSON.parse(bigText);
const small = JSON.parse(readFileSync(new URL("../tests/vectors/manufacturer.json", import.meta.url), "utf8")).snapshot;

const ROUNDS = 5;
const pretty = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : ns >= 1e3 ? `${(ns / 1e3).toFixed(2)} µs` : `${ns.toFixed(0)} ns`);
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

function round(iterations, fn) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) fn(i);
  return Number(process.hrtime.bigint() - t0) / iterations;
}

// `make(Engine)` → the function to time on an engine of that build.
function time(label, iterations, engines, make) {
  const fns = engines.map((e) => make(e));
  for (const fn of fns) for (let i = 0; i < Math.min(iterations, 200); i++) fn(i); // warm up
  const rounds = fns.map(() => []);
  for (let r = 0; r < ROUNDS; r++) fns.forEach((fn, k) => rounds[k].push(round(iterations, fn)));
  const m = rounds.map(median);
  const cols = m.map((x) => pretty(x).padStart(12)).join(" ");
  const ratio = m.length === 2 ? `   ${(m[0] / m[1]).toFixed(2)}×` : "";
  console.log(`${label.padEnd(52)} ${cols}${ratio}`);
}

function suite(name, snapshot, calls) {
  const engines = [PolicyEngine.fromJson(snapshot)];
  if (Alt) engines.push(Alt.fromJson(snapshot));
  console.log(`\n${name}${"".padEnd(52 - name.length)} ${"this build".padStart(12)}${Alt ? ` ${"FLEETGATE_ALT".padStart(12)}   ratio` : ""}`);
  for (const [label, iterations, make] of calls) time(label, iterations, engines, make);
  for (const e of engines) e.free();
}

// ---- the 100k-device world ----------------------------------------------------------------------
const leafMember = big.memberships.find((m) => m.role === "User" && big.devices.some((d) => d.owner === m.user));
const leaf = leafMember.user;
const ids = big.devices.map((d) => d.id);
const free = big.devices.find((d) => d.owner === null);
const other = big.orgs.find((o) => o.id !== free.org && o.parent !== null).id;
const move = { op: "moveDevice", device: free.id, org: other };
const moveText = JSON.stringify(move);
suite("100k devices", bigText, [
  ["explain (root admin, allowed)", 100_000, (e) => (i) => e.explain("u000000", ids[i % ids.length], "control")],
  ["explain (leaf user, denied with reason)", 100_000, (e) => (i) => e.explain(leaf, ids[i % ids.length], "view")],
  ["decide moveDevice (root admin, command object)", 20_000, (e) => () => e.decide("u000000", move)],
  ["decide moveDevice (root admin, command text)", 20_000, (e) => () => e.decide("u000000", moveText)],
  ["decide moveDevice (leaf user, denied)", 20_000, (e) => () => e.decide(leaf, move)],
  ["preview moveDevice (root admin)", 2_000, (e) => () => e.preview("u000000", move)],
  ["commandDelta moveDevice (root admin)", 20_000, (e) => () => e.commandDelta("u000000", move)],
  ["project leaf user", 5_000, (e) => () => e.project(leaf)],
  ["project root admin (100k devices)", 2, (e) => () => e.project("u000000")],
  ["toJson (100k devices)", 2, (e) => () => e.toJson()],
]);

// ---- the small world ----------------------------------------------------------------------------
const smallMove = { op: "moveDevice", device: "jones-thermo", org: "acme" };
suite("manufacturer world (vectors)", small, [
  ["explain (allowed)", 200_000, (e) => () => e.explain("ceo", "lab-1", "control")],
  ["explain (denied with reason)", 200_000, (e) => () => e.explain("north-staff", "south-1", "view")],
  ["decide moveDevice (command object)", 100_000, (e) => () => e.decide("ceo", smallMove)],
  ["preview moveDevice", 20_000, (e) => () => e.preview("ceo", smallMove)],
  ["commandDelta moveDevice", 100_000, (e) => () => e.commandDelta("ceo", smallMove)],
  ["project (family owner)", 20_000, (e) => () => e.project("jones")],
  ["toJson", 20_000, (e) => () => e.toJson()],
]);
