// Benchmarks the edge gateway (run by hand: `make bench-edge`; prints numbers, asserts nothing):
//   1. device commands denied and allowed through the edge (workerd) vs straight to the server, p50/p99;
//   2. propagation: a commit at the server → visible at the edge;
//   3. the 100k-device world at the edge: load time and workerd's memory (RSS from /proc);
//   4. applySignedDelta of one device move (in Node, through the package).
// Uses target/debug/fleetgate-server (or $FLEETGATE_SERVER; a release build gives fairer server
// numbers) and target/bench-world.json (generated with the fleetgate CLI when missing).
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PolicyEngine } from "fleetgate";
import { ROOT, SigningKey, http, nowS, startEdge, startServer, stop, waitFor } from "../tests/edge/harness.mjs";
import { StubOrigin } from "../tests/edge/stub-origin.mjs";

const N = Number(process.env.BENCH_N ?? 400);
const ROUNDS = Number(process.env.BENCH_PROPAGATION ?? 20);
const ms = (x) => `${x.toFixed(2)} ms`;
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const summary = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return `p50 ${ms(pct(s, 50))}  p99 ${ms(pct(s, 99))}  max ${ms(s.at(-1))}  (n=${s.length})`;
};

/** RSS in MiB of `pid` and its descendants (workerd is serve.mjs's child). */
function rssMiB(pid) {
  const kids = (p) => {
    try {
      return readdirSync(`/proc/${p}/task`).flatMap((t) => readFileSync(`/proc/${p}/task/${t}/children`, "utf8").trim().split(/\s+/).filter(Boolean));
    } catch {
      return [];
    }
  };
  const all = [];
  const walk = (p) => {
    all.push(p);
    for (const k of kids(p)) walk(k);
  };
  walk(pid);
  const out = {};
  for (const p of all) {
    try {
      const status = readFileSync(`/proc/${p}/status`, "utf8");
      out[status.match(/^Name:\s+(.*)$/m)[1]] = Number(status.match(/^VmRSS:\s+(\d+)/m)[1]) / 1024;
    } catch {
      // gone
    }
  }
  return out;
}

async function timed(fn) {
  const t0 = performance.now();
  const r = await fn();
  return [performance.now() - t0, r];
}

async function world(dir, snapshot, extraArgs = []) {
  const active = snapshot.users.filter((u) => u.status === "active").map((u) => u.id);
  const passwords = Object.fromEntries(active.map((u) => [u, `pw-${u}`]));
  const edgeToken = randomBytes(24).toString("base64url");
  writeFileSync(join(dir, "seed.json"), JSON.stringify({ snapshot, passwords }));
  writeFileSync(join(dir, "edge-tokens"), `${edgeToken}\n`);
  const db = join(dir, `w${Date.now()}.db`);
  const server = await startServer(["--db", db, "--seed", join(dir, "seed.json"), "--edge-token-file", join(dir, "edge-tokens"), ...extraArgs]);
  return { server, edgeToken, passwords, db };
}

async function accessToken(base, snapshot, user, password) {
  const email = snapshot.users.find((u) => u.id === user).email;
  const s = (await http(`${base}/api/login`, { method: "POST", body: { email, password } })).json();
  return { session: s.token, access: (await http(`${base}/api/token`, { method: "POST", token: s.token })).json().accessToken };
}

const dir = mkdtempSync(join(tmpdir(), "fleetgate-bench-edge-"));
const procs = [];
try {
  // ---- 1 + 2: the manufacturer world --------------------------------------------------------
  const small = JSON.parse(readFileSync(join(ROOT, "tests/vectors/manufacturer.json"), "utf8")).snapshot;
  const { server, edgeToken, passwords } = await world(dir, small);
  procs.push(server.proc);
  const edge = await startEdge({ origin: server.base, edgeToken });
  procs.push(edge.proc);
  await waitFor("edge ready", async () => (await edge.status()).state === "ready");
  const kid = await accessToken(server.base, small, "jones-kid", passwords["jones-kid"]);
  const ceo = await accessToken(server.base, small, "ceo", passwords.ceo);
  const cmd = (base, device, token) => http(`${base}/api/devices/${device}/commands`, { method: "POST", token, body: { name: "ping" } });
  console.log(`device commands (sequential, keep-alive; n=${N} each):`);
  for (const [label, base, device, want] of [
    ["denied  via edge   ", edge.base, "lab-1", 403],
    ["denied  to server  ", server.base, "lab-1", 403],
    ["allowed via edge   ", edge.base, "jones-cam", 202],
    ["allowed to server  ", server.base, "jones-cam", 202],
  ]) {
    for (let i = 0; i < 30; i++) await cmd(base, device, kid.access); // warm up
    const xs = [];
    for (let i = 0; i < N; i++) {
      const [t, r] = await timed(() => cmd(base, device, kid.access));
      if (r.status !== want) throw new Error(`${label}: ${r.status} ${r.text}`);
      xs.push(t);
    }
    console.log(`  ${label} ${summary(xs)}`);
  }
  {
    const xs = [];
    for (let i = 0; i < N; i++) xs.push((await timed(() => http(`${edge.base}/api/devices?action=control`, { token: ceo.access })))[0]);
    const ys = [];
    for (let i = 0; i < N; i++) ys.push((await timed(() => http(`${server.base}/api/devices?action=control`, { token: ceo.access })))[0]);
    console.log(`  GET /api/devices (root admin) via edge  ${summary(xs)}`);
    console.log(`  GET /api/devices (root admin) to server ${summary(ys)}`);
  }

  console.log(`propagation, commit at the server (its 200) → the edge's status shows the revision (n=${ROUNDS}):`);
  const lat = [];
  for (let i = 0; i < ROUNDS; i++) {
    const org = i % 2 === 0 ? "dist-south" : "dist-north";
    const res = await http(`${server.base}/api/commands`, { method: "POST", token: ceo.access, body: { op: "moveDevice", device: "north-stock-1", org } });
    const t0 = performance.now();
    const revision = res.json().revision;
    await waitFor("the edge", async () => (await edge.status()).revision >= revision, { interval: 2 });
    lat.push(performance.now() - t0);
  }
  console.log(`  moveDevice            ${summary(lat)}`);
  const baseline = rssMiB(edge.proc.pid);
  await stop(edge.proc);
  await stop(server.proc);
  if (!existsSync(join(ROOT, "target/bench-world.json"))) console.log("generating the 100k world (target/bench-world.json)");

  // ---- 3: the 100k-device world -------------------------------------------------------------
  const worldPath = join(ROOT, "target/bench-world.json");
  if (!existsSync(worldPath)) {
    const cli = [join(ROOT, "target/release/fleetgate"), join(ROOT, "target/debug/fleetgate")].find(existsSync);
    const json = cli
      ? execFileSync(cli, ["generate"], { maxBuffer: 1 << 30 })
      : execFileSync("cargo", ["run", "-q", "-p", "fleetgate-cli", "--", "generate"], { maxBuffer: 1 << 30 });
    writeFileSync(worldPath, json);
  }
  const bigText = readFileSync(worldPath, "utf8");
  const big = JSON.parse(bigText);
  // The edge's own cost, measured against an origin stub that serves the signed snapshot at once
  // (the server's time to produce it is printed separately below when BENCH_BIG_SERVER=1).
  const stub = new StubOrigin({ snapshot: big, edgeToken: "bench-edge" });
  const stubBase = await stub.listen();
  try {
    const t0 = performance.now();
    const bigEdge = await startEdge({ origin: stubBase, edgeToken: "bench-edge", readyTimeout: 0 });
    procs.push(bigEdge.proc);
    const tServing = performance.now() - t0;
    await waitFor("the 100k edge", async () => (await bigEdge.status()).state === "ready", { timeout: 120000, interval: 10 });
    const tReady = performance.now() - t0;
    console.log(`100k world (${(bigText.length / 1e6).toFixed(1)} MB JSON, ${(JSON.stringify(stub.snapshotEnvelope()).length / 1e6).toFixed(1)} MB envelope), edge against an origin stub:`);
    console.log(`  start → workerd serving ${ms(tServing)}; start → snapshot loaded (fetch + verify + index) ${ms(tReady)}`);
    const reloads = [];
    for (let i = 0; i < 3; i++) {
      const loads = (await bigEdge.status()).stats.loads;
      const t1 = performance.now();
      // A change the edge does not hear of, then a delta beyond it: a gap, so it refetches.
      const dev = big.devices[i];
      stub.commit([{ op: "putDevice", device: { ...dev, name: `${dev.name} ${i}` } }], { push: false });
      stub.pushDelta(stub.deltaEnvelope({ from: stub.revision + 10, to: stub.revision + 11, ops: [] }), 0);
      await waitFor("the reload", async () => (await bigEdge.status()).stats.loads > loads, { timeout: 60000, interval: 5 });
      reloads.push(performance.now() - t1);
    }
    console.log(`  reload in a warm isolate (gap → refetch → verify → index → swap)  ${summary(reloads)}`);
    console.log(`  memory (VmRSS, MiB): manufacturer world ${JSON.stringify(round(baseline))}, 100k world ${JSON.stringify(round(rssMiB(bigEdge.proc.pid)))}`);
    const rootAdmin = big.memberships.find((m) => m.role === "Admin" && big.orgs.find((o) => o.id === m.org).parent === null).user;
    const token = stub.key.token({ user: rootAdmin, session: "bench" });
    const leafDevice = big.devices.find((d) => d.owner !== null);
    const leafToken = stub.key.token({ user: leafDevice.owner, session: "bench-leaf" });
    for (const [label, fn, n] of [
      ["denied command (leaf user, another's device)", () => cmd(bigEdge.base, big.devices[0].id === leafDevice.id ? big.devices[1].id : big.devices[0].id, leafToken), N],
      ["GET /api/devices leaf user", () => http(`${bigEdge.base}/api/devices`, { token: leafToken }), N],
      ["GET /api/devices root admin (100k ids)", () => http(`${bigEdge.base}/api/devices`, { token }), 50],
    ]) {
      for (let i = 0; i < 10; i++) await fn();
      const xs = [];
      for (let i = 0; i < n; i++) xs.push((await timed(fn))[0]);
      console.log(`  ${label.padEnd(46)} ${summary(xs)}`);
    }
    await stop(bigEdge.proc);
  } finally {
    await stub.close();
  }

  if (process.env.BENCH_BIG_SERVER) {
    const rootAdmin = big.memberships.find((m) => m.role === "Admin" && big.orgs.find((o) => o.id === m.org).parent === null).user;
    const edgeToken = randomBytes(24).toString("base64url");
    // Only the root admin gets a password (Argon2 for 20,000 users would dominate the seed).
    writeFileSync(join(dir, "seed-big.json"), JSON.stringify({ snapshot: big, passwords: { [rootAdmin]: "pw-root" } }));
    writeFileSync(join(dir, "edge-tokens-big"), `${edgeToken}\n`);
    const [t, srv] = await timed(() => startServer(["--db", join(dir, "big.db"), "--seed", join(dir, "seed-big.json"), "--edge-token-file", join(dir, "edge-tokens-big")]));
    procs.push(srv.proc);
    console.log(`100k world at the server: seeded and listening in ${ms(t)}`);
    const [tEnv, envRes] = await timed(() => http(`${srv.base}/api/edge/snapshot`, { token: edgeToken }));
    console.log(`  GET /api/edge/snapshot: ${ms(tEnv)} (${(envRes.text.length / 1e6).toFixed(1)} MB)`);
    const t0 = performance.now();
    const e = await startEdge({ origin: srv.base, edgeToken, readyTimeout: 0 });
    procs.push(e.proc);
    await waitFor("the 100k edge", async () => (await e.status()).state === "ready", { timeout: 180000, interval: 10 });
    console.log(`  edge start → loaded from the server ${ms(performance.now() - t0)}`);
    await stop(e.proc);
    await stop(srv.proc);
  }

  // ---- 4: applySignedDelta in Node ----------------------------------------------------------
  const key = new SigningKey("bench");
  const keys = { bench: key.publicKey };
  const envelopeText = JSON.stringify(key.envelope({ ...big, expiresAt: nowS() + 3600 })); // as text, as the edge gets it
  const [tLoad, engine] = await timed(() => PolicyEngine.fromSigned(envelopeText, keys));
  console.log(`applySignedDelta, Node (package), 100k world; fromSigned of the 10 MB envelope: ${ms(tLoad)}`);
  const dev = big.devices.find((d) => d.owner === null);
  const orgs = [dev.org, big.orgs.find((o) => o.id !== dev.org).id];
  const M = 2000;
  const envelopes = [];
  for (let i = 0; i < M + 200; i++) {
    const r = engine.revision + i;
    envelopes.push(JSON.stringify(key.envelope({ format: "fleetgate/delta@1", from: r, to: r + 1, ops: [{ op: "putDevice", device: { ...dev, org: orgs[(i + 1) % 2] } }], expiresAt: nowS() + 3600 })));
  }
  for (let i = 0; i < 200; i++) engine.applySignedDelta(envelopes[i], keys); // warm up
  const t1 = performance.now();
  for (let i = 200; i < M + 200; i++) engine.applySignedDelta(envelopes[i], keys);
  console.log(`  one device move (verify + parse + apply): ${(((performance.now() - t1) / M) * 1000).toFixed(1)} µs per delta (n=${M})`);
  engine.free();
} finally {
  for (const p of procs) await stop(p);
  rmSync(dir, { recursive: true, force: true });
}

function round(o) {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Math.round(v)]));
}
