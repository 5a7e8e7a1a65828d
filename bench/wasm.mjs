// Benchmarks the wasm package in Node on the generated large world (`make bench-wasm`) against a
// competent hand-written JS index of the same world, in the same process. Prints a table with
// ratios; never asserts on time. Every answer of the JS index is first compared with the
// engine's (the benchmark exits non-zero on a mismatch, so the baseline answers the same
// questions).
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { gzipSync } from "node:zlib";
import { PolicyEngine } from "fleetgate";

const worldPath = new URL("../target/bench-world.json", import.meta.url);
if (!existsSync(worldPath)) {
  const json = execFileSync("cargo", ["run", "-q", "--release", "-p", "fleetgate-cli", "--", "generate"], { maxBuffer: 1 << 30 });
  writeFileSync(worldPath, json);
}
const text = readFileSync(worldPath, "utf8");
const world = JSON.parse(text);
const ROUNDS = Number(process.env.ROUNDS ?? 7);

// ---- a seeded generator (mulberry32) ---------------------------------------------------------
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = rng(12);
const pick = (list) => list[Math.floor(random() * list.length)];

// ---- the hand-written JS index -----------------------------------------------------------------
// What a competent JS developer writes for SPEC §3: Maps from id to records, orgs numbered in
// pre-order (Euler-tour intervals: the subtree of `o` is pre(o)..post(o)), effective suspension
// precomputed, role permissions resolved once per membership into a bitmask, devices ranked by
// id once so listings sort integers (or scan a flag array when large), never strings.
const PERMS = ["devices.own.view", "devices.own.control", "devices.org.view", "devices.org.control", "devices.add", "devices.transfer", "devices.remove", "orgs.switch", "orgs.create", "orgs.edit", "users.view", "users.invite", "users.edit", "users.remove", "users.suspend", "roles.edit"];
const BIT = Object.fromEntries(PERMS.map((p, i) => [p, 1 << i]));
const ALL = (1 << PERMS.length) - 1;
const close = (m) => m | (m & BIT["devices.own.control"] ? BIT["devices.own.view"] : 0) | (m & BIT["devices.org.control"] ? BIT["devices.org.view"] : 0);
const BUILTIN = {
  Admin: ALL,
  Staff: close(["devices.org.view", "devices.org.control", "devices.own.view", "devices.own.control", "devices.add", "users.view"].reduce((m, p) => m | BIT[p], 0)),
  User: 0,
};

class JsIndex {
  constructor(w) {
    // Orgs in pre-order.
    const byId = new Map(w.orgs.map((o) => [o.id, o]));
    const kids = new Map();
    const roots = [];
    for (const o of w.orgs) {
      if (o.parent === null || o.parent === undefined) roots.push(o);
      else (kids.get(o.parent) ?? kids.set(o.parent, []).get(o.parent)).push(o);
    }
    this.orgs = []; // by pre-order number: {id, pre, post, depth, suspended (effective), roles (raw table), parent}
    this.orgIx = new Map();
    const walk = (o, parent, depth, eff) => {
      const rec = { id: o.id, pre: this.orgs.length, post: 0, depth, suspended: eff || !!o.suspended, roles: o.roles ?? null, parent };
      this.orgs.push(rec);
      this.orgIx.set(o.id, rec);
      for (const c of kids.get(o.id) ?? []) walk(c, rec, depth + 1, rec.suspended);
      rec.post = this.orgs.length - 1;
    };
    for (const r of roots) walk(r, null, 1, false);
    void byId;
    const rolePerms = (org, role) => {
      for (let o = org; o !== null; o = o.parent) {
        if (o.roles && Object.hasOwn(o.roles, role)) return role === "Admin" ? ALL : close(o.roles[role].reduce((m, p) => m | BIT[p], 0));
      }
      return BUILTIN[role] ?? 0;
    };
    // Users and memberships.
    this.users = new Map();
    for (const u of w.users) this.users.set(u.id, { active: u.status === "active", mems: [], owned: [] });
    for (const m of w.memberships) {
      const org = this.orgIx.get(m.org);
      this.users.get(m.user).mems.push({ org: org.pre, pre: org.pre, post: org.post, depth: org.depth, perms: rolePerms(org, m.role) });
    }
    // Devices ranked by id; per-org rank lists ascending.
    const sorted = w.devices.map((d) => d.id).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const rank = new Map(sorted.map((id, i) => [id, i]));
    this.idsByRank = sorted;
    this.devices = new Map();
    this.devOrgByRank = new Int32Array(sorted.length);
    const perOrg = this.orgs.map(() => []);
    for (const d of w.devices) {
      const r = rank.get(d.id);
      const org = this.orgIx.get(d.org).pre;
      const owner = d.owner === null || d.owner === undefined ? null : this.users.get(d.owner);
      this.devices.set(d.id, { rank: r, org, owner });
      this.devOrgByRank[r] = org;
      if (owner !== null) owner.owned.push(r);
    }
    for (let r = 0; r < sorted.length; r++) perOrg[this.devOrgByRank[r]].push(r);
    this.orgDevices = perOrg.map((l) => Int32Array.from(l));
    for (const u of this.users.values()) u.owned.sort((a, b) => a - b);
  }

  can(user, device, orgBit, ownBit) {
    const u = this.users.get(user);
    if (u === undefined || !u.active) return false;
    const d = this.devices.get(device);
    if (d === undefined) return false;
    const org = this.orgs[d.org];
    if (org.suspended) return false;
    const sub = orgBit | BIT["orgs.switch"];
    for (const m of u.mems) {
      if (m.org === d.org) {
        if (m.perms & orgBit) return true;
        if (m.perms & ownBit && d.owner === u) return true;
      } else if ((m.perms & sub) === sub && m.pre < d.org && d.org <= m.post) return true;
    }
    return false;
  }

  canView(user, device) {
    return this.can(user, device, BIT["devices.org.view"], BIT["devices.own.view"]);
  }

  visibleDevices(user) {
    const u = this.users.get(user);
    if (u === undefined || !u.active) return [];
    const orgBit = BIT["devices.org.view"];
    const ownBit = BIT["devices.own.view"];
    const sub = orgBit | BIT["orgs.switch"];
    const orgs = new Uint8Array(this.orgs.length); // 1: every device of the org, 2: own devices
    const granted = []; // the orgs flagged 1
    let total = 0;
    for (const m of u.mems) {
      if ((m.perms & sub) === sub) {
        for (let o = m.pre; o <= m.post; ) {
          const rec = this.orgs[o];
          if (rec.suspended) {
            o = rec.post + 1;
            continue;
          }
          if (orgs[o] !== 1) {
            total += this.orgDevices[o].length;
            granted.push(o);
          }
          orgs[o++] = 1;
        }
      } else if (m.perms & orgBit) {
        if (!this.orgs[m.org].suspended && orgs[m.org] !== 1) {
          orgs[m.org] = 1;
          granted.push(m.org);
          total += this.orgDevices[m.org].length;
        }
      } else if (m.perms & ownBit && orgs[m.org] === 0) orgs[m.org] = 2;
    }
    const n = this.idsByRank.length;
    if (total === n) return this.idsByRank.slice(); // every device
    if (total * 4 > n) {
      const out = [];
      const byRank = this.devOrgByRank;
      for (let r = 0; r < n; r++) if (orgs[byRank[r]] === 1) out.push(this.idsByRank[r]);
      if (u.owned.length > 0) return this.withOwn(out, u, orgs);
      return out;
    }
    const ranks = new Int32Array(total + u.owned.length);
    let k = 0;
    for (const o of granted) {
      ranks.set(this.orgDevices[o], k);
      k += this.orgDevices[o].length;
    }
    for (const r of u.owned) {
      const o = this.devOrgByRank[r];
      if (orgs[o] === 2 && !this.orgs[o].suspended) ranks[k++] = r;
    }
    const list = ranks.subarray(0, k).sort();
    const out = new Array(k);
    for (let i = 0; i < k; i++) out[i] = this.idsByRank[list[i]];
    return out;
  }

  // Adds own devices in orgs flagged 2 to an id-ordered list (rare: a large grant plus own devices).
  withOwn(out, u, orgs) {
    const extra = u.owned.filter((r) => orgs[this.devOrgByRank[r]] === 2 && !this.orgs[this.devOrgByRank[r]].suspended).map((r) => this.idsByRank[r]);
    return extra.length === 0 ? out : [...out, ...extra].sort();
  }

  filterDevices(user, ids) {
    const out = [];
    const u = this.users.get(user);
    if (u === undefined || !u.active) return out;
    const orgBit = BIT["devices.org.view"];
    const ownBit = BIT["devices.own.view"];
    const sub = orgBit | BIT["orgs.switch"];
    for (const id of ids) {
      const d = this.devices.get(id);
      if (d === undefined || this.orgs[d.org].suspended) continue;
      for (const m of u.mems) {
        if (m.org === d.org ? m.perms & orgBit || (m.perms & ownBit && d.owner === u) : (m.perms & sub) === sub && m.pre < d.org && d.org <= m.post) {
          out.push(id);
          break;
        }
      }
    }
    return out;
  }
}

// ---- timing ------------------------------------------------------------------------------------
const pretty = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : ns >= 1e3 ? `${(ns / 1e3).toFixed(1)} µs` : `${ns.toFixed(0)} ns`);

// Per-call time of `fn` over `iterations` calls, the best of ROUNDS rounds: on a shared machine
// other processes only ever add time, so the best round is the stable estimate (the medians
// are printed to stderr as well).
function time(iterations, fn) {
  for (let i = 0; i < Math.min(iterations, 1000); i++) fn(i); // warm up
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) fn(i);
    rounds.push(Number(process.hrtime.bigint() - t0) / iterations);
  }
  rounds.sort((a, b) => a - b);
  return { best: rounds[0], median: rounds[ROUNDS >> 1] };
}

const table = [];
// One row: fleetgate and the JS index, measured alternately (so load on the machine hits both).
// ROWS=text measures only the rows whose label contains it.
function row(label, iterations, engineFn, jsFn) {
  if (process.env.ROWS && !label.includes(process.env.ROWS)) return;
  const a = [];
  const b = [];
  for (let k = 0; k < 3; k++) {
    a.push(time(iterations, engineFn));
    b.push(time(iterations, jsFn));
  }
  const best = (xs) => Math.min(...xs.map((x) => x.best));
  const median = (xs) => xs.map((x) => x.median).sort((x, y) => x - y)[1];
  table.push([label, best(a), best(b)]);
  console.error(`  ${label}: best ${pretty(best(a))} vs ${pretty(best(b))}; medians ${pretty(median(a))} vs ${pretty(median(b))}`);
}

function check(what, ok) {
  if (!ok) {
    console.error(`MISMATCH: ${what}`);
    process.exitCode = 1;
  }
}

// ---- the world and its users -------------------------------------------------------------------
let engine = PolicyEngine.fromJson(text);
const js = new JsIndex(world);
const memberOf = new Map();
for (const m of world.memberships) (memberOf.get(m.org) ?? memberOf.set(m.org, []).get(m.org)).push(m);
const depthOf = (org) => org.split("-").length; // generated ids: acme, acme-3, acme-3-1, …
const adminAt = (depth) => world.memberships.find((m) => m.role === "Admin" && depthOf(m.org) === depth && m.user !== "u000000").user;
const status = new Map(world.users.map((u) => [u.id, u.status]));
const owners = new Set(world.devices.map((d) => d.owner).filter((o) => o));
const categories = [
  ["root admin (100k devices)", "u000000"],
  ["region admin", adminAt(2)],
  ["distributor admin", adminAt(3)],
  ["dealer admin", adminAt(4)],
  ["end-client admin", world.memberships.find((m) => m.role === "Admin" && depthOf(m.org) === 5 && owners.has(m.user)).user],
  ["staff", world.memberships.find((m) => m.role === "Staff" && depthOf(m.org) === 4).user],
  ["family member (User role, owns devices)", world.memberships.find((m) => m.role === "User" && owners.has(m.user)).user],
  ["invited family member (pending)", world.memberships.find((m) => status.get(m.user) === "pending" && m.role === "User").user],
];
const users = world.users.map((u) => u.id);
const fifty = Array.from({ length: 50 }, () => pick(users.slice(1))); // not the root admin
const ids = world.devices.map((d) => d.id);

// Shuffled pairs, ~30% allowed: a random user, then one of its visible devices or any device.
const pool = Array.from({ length: 2000 }, () => pick(users));
const visible = new Map(pool.map((u) => [u, js.visibleDevices(u)]));
const pairUsers = [];
const pairDevices = [];
for (let i = 0; i < 100_000; i++) {
  const u = pick(pool);
  const seen = visible.get(u);
  pairUsers.push(u);
  pairDevices.push(seen.length > 0 && random() < 0.3 ? pick(seen) : pick(ids));
}
const thousand = Array.from({ length: 1000 }, () => pick(ids));

// ---- the answers agree -------------------------------------------------------------------------
let allowed = 0;
for (let i = 0; i < pairUsers.length; i++) {
  const a = engine.canView(pairUsers[i], pairDevices[i]);
  allowed += a ? 1 : 0;
  if (a !== js.canView(pairUsers[i], pairDevices[i])) check(`canView(${pairUsers[i]}, ${pairDevices[i]})`, false);
}
const same = (x, y) => x.length === y.length && x.every((v, i) => v === y[i]);
for (const [, u] of categories) check(`visibleDevices(${u})`, same(engine.visibleDevices(u), js.visibleDevices(u)));
for (const u of [...fifty, ...pool.slice(0, 200)]) check(`visibleDevices(${u})`, same(engine.visibleDevices(u), js.visibleDevices(u)));
for (const [, u] of categories) check(`filterDevices(${u})`, same(engine.filterDevices(u, thousand), js.filterDevices(u, thousand)));
console.error(`world: ${world.orgs.length} orgs, ${world.users.length} users, ${world.devices.length} devices; pairs allowed: ${((allowed / pairUsers.length) * 100).toFixed(1)}%`);
console.error(`visible devices: ${categories.map(([c, u]) => `${c} ${js.visibleDevices(u).length}`).join(", ")}`);

// ---- the rows ----------------------------------------------------------------------------------
let sink = 0;
row("canView, 100k shuffled pairs", 100_000, (i) => (sink += engine.canView(pairUsers[i], pairDevices[i]) ? 1 : 0), (i) => (sink += js.canView(pairUsers[i], pairDevices[i]) ? 1 : 0));
row("visibleDevices, mean of 50 users", 50, (i) => (sink += engine.visibleDevices(fifty[i]).length), (i) => (sink += js.visibleDevices(fifty[i]).length));
for (const [label, u] of categories) {
  const n = js.visibleDevices(u).length;
  row(`visibleDevices, ${label}`, n > 1000 ? 20 : n > 50 ? 2000 : 20_000, () => (sink += engine.visibleDevices(u).length), () => (sink += js.visibleDevices(u).length));
}
const root = categories[0][1];
const region = categories[1][1];
const family = categories[6][1];
row("filterDevices, 1,000 random ids (root admin)", 500, () => (sink += engine.filterDevices(root, thousand).length), () => (sink += js.filterDevices(root, thousand).length));
row("filterDevices, 1,000 random ids (region admin)", 500, () => (sink += engine.filterDevices(region, thousand).length), () => (sink += js.filterDevices(region, thousand).length));
row("filterDevices, 1,000 random ids (family member)", 500, () => (sink += engine.filterDevices(family, thousand).length), () => (sink += js.filterDevices(family, thousand).length));
// Build: from the JSON text to the first answer (so work an engine defers is counted). Each
// round builds once; the previous engine is freed after the clock stops (the JS index's
// teardown is left to the garbage collector, also unmeasured).
if (!process.env.ROWS || "build".includes(process.env.ROWS)) {
  const builds = { a: [], b: [] };
  let keep = null;
  for (let r = 0; r < 3 * ROUNDS; r++) {
    let t0 = process.hrtime.bigint();
    const fresh = PolicyEngine.fromJson(text);
    sink += fresh.canView(pairUsers[0], pairDevices[0]) ? 1 : 0;
    builds.a.push(Number(process.hrtime.bigint() - t0));
    fresh.free();
    t0 = process.hrtime.bigint();
    keep = new JsIndex(JSON.parse(text));
    sink += keep.canView(pairUsers[0], pairDevices[0]) ? 1 : 0;
    builds.b.push(Number(process.hrtime.bigint() - t0));
    keep = null;
  }
  const sorted = (xs) => xs.sort((x, y) => x - y);
  const [a, b] = [sorted(builds.a), sorted(builds.b)];
  table.push(["build from the JSON text (to the first canView)", a[0], b[0]]);
  console.error(`  build: best ${pretty(a[0])} vs ${pretty(b[0])}; medians ${pretty(a[a.length >> 1])} vs ${pretty(b[b.length >> 1])}`);
}

// ---- changes (fleetgate only: the JS index is not incremental) --------------------------------
// A delta per call, each from the engine's revision: a device moved between two orgs and back;
// a device added, then removed, with an id first in id order (every device after it moves down
// a rank); the same with the region admin's list after each (the first listing after devices
// came or went ranks them).
const changes = [];
if (!process.env.ROWS || "applyDelta".includes(process.env.ROWS)) {
  const mover = world.devices.find((d) => !d.owner);
  const other = world.orgs.find((o) => o.id !== mover.org).id;
  let flip = false;
  const delta = (op) => JSON.stringify({ format: "fleetgate/delta@1", from: engine.revision, to: engine.revision + 1, ops: [op] });
  const move = () => {
    flip = !flip;
    engine.applyDelta(delta({ op: "putDevice", device: { id: mover.id, name: mover.name, org: flip ? other : mover.org, owner: null } }));
  };
  let added = false;
  const addRemove = () => {
    added = !added;
    engine.applyDelta(delta(added ? { op: "putDevice", device: { id: "0-added", name: "Added", org: mover.org, owner: null } } : { op: "removeDevice", id: "0-added" }));
  };
  const rows = [
    ["applyDelta, one device move", () => move()],
    ["applyDelta, a device added or removed first in id order", () => addRemove()],
    ["the same, then visibleDevices (region admin)", () => {
      addRemove();
      sink += engine.visibleDevices(region).length;
    }],
  ];
  for (const [label, fn] of rows) {
    const t = [0, 1, 2].map(() => time(200, fn));
    changes.push([label, Math.min(...t.map((x) => x.best))]);
  }
  if (flip) move();
  if (added) addRemove();
}

// ---- the table ---------------------------------------------------------------------------------
const wasm = readFileSync(new URL("../pkg/web/fleetgate_bg.wasm", import.meta.url));
console.log(`fleetgate ${world.devices.length.toLocaleString("en")} devices, ${world.orgs.length.toLocaleString("en")} orgs, ${world.users.length.toLocaleString("en")} users; Node ${process.version}; best of 3×${ROUNDS} rounds, fleetgate and the JS index alternating`);
console.log(`| row | fleetgate | hand-written JS | JS ÷ fleetgate |`);
console.log(`|---|---|---|---|`);
for (const [label, a, b] of table) console.log(`| ${label} | ${pretty(a)} | ${pretty(b)} | ${(b / a).toFixed(2)}× |`);
for (const [label, a] of changes) console.log(`| ${label} | ${pretty(a)} | | |`);
// The size as scripts/build-pkg.sh reports it (`gzip -9`); Node's zlib if gzip is missing.
let gz;
try {
  gz = `${execFileSync("gzip", ["-9", "-c"], { input: wasm, maxBuffer: 1 << 26 }).length.toLocaleString("en")} bytes gzipped (gzip -9)`;
} catch {
  gz = `${gzipSync(wasm, { level: 9 }).length.toLocaleString("en")} bytes gzipped (zlib level 9)`;
}
console.log(`| .wasm | ${wasm.length.toLocaleString("en")} bytes raw, ${gz} | | |`);
if (sink === 0.5) console.log(sink);
