// Starts the real fleetgate-server for tests (loopback, random or given port) and stops it;
// a seeded source of random commands for the tests that follow the server through them.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { waitFor } from "../edge/harness.mjs";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

export function serverBinary() {
  const candidates = [process.env.FLEETGATE_SERVER, join(ROOT, "target/debug/fleetgate-server"), join(ROOT, "target/release/fleetgate-server")];
  const found = candidates.find((p) => p && existsSync(p));
  if (!found) throw new Error("build the server first (cargo build -p fleetgate-server)");
  return found;
}

/** Spawns the server with `args`; resolves `{proc, base, stop(signal)}` once it listens. */
export function startServer(args, { timeoutMs = 60000 } = {}) {
  const proc = spawn(serverBinary(), args, { env: { ...process.env, RUST_LOG: "warn" }, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  proc.stderr.on("data", (d) => (log += d));
  const exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  const stop = async (signal = "SIGTERM") => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  };
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`the server did not listen within ${timeoutMs} ms:\n${log}`));
    }, timeoutMs);
    proc.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/listening on (http:\/\/[\d.:]+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, base: m[1], stop, log: () => log });
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code ?? signal}) before listening:\n${log}`));
    });
  });
}

/** Polls `fn` until it returns a truthy value or the deadline passes (then throws `what`). */
export const until = (fn, what, timeoutMs = 15000) => waitFor(what, fn, { timeout: timeoutMs, interval: 20 });

/**
 * A seeded source of random commands by `actor` on `world` (the seed's orgs): `next(engine)`
 * returns one the actor's own engine allows (tries a few; a denied one is sent now and then):
 * device moves, transfers, role changes, added and removed devices, suspended and resumed orgs.
 */
export function commandGenerator(world, actor, seed) {
  let state = seed >>> 0 || 1;
  const rand = (n) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % n;
  };
  const pick = (a) => a[rand(a.length)];
  // Suspended orgs leave the actor's projection (SPEC §4.3): the seed's orgs, to resume them too.
  const orgs = world.orgs.map((o) => o.id).filter((o) => o !== "globex");
  const roles = ["Admin", "Staff", "User", "Installer", "Switcher", "OfficeAdmin"];
  return (engine) => {
    const snap = engine.toJson();
    const devices = snap.devices.map((d) => d.id);
    const members = snap.memberships.filter((m) => m.user !== actor);
    for (let tries = 0; tries < 20; tries++) {
      const kind = devices.length < 5 ? 14 : rand(20);
      let cmd;
      if (kind < 6) cmd = { op: "moveDevice", device: pick(devices), org: pick(orgs) };
      else if (kind < 10) {
        const m = pick(snap.memberships);
        cmd = { op: "transferDevice", device: pick(devices), owner: m.user, org: m.org };
      } else if (kind < 14) {
        const m = pick(members);
        cmd = { op: "setRole", user: m.user, org: m.org, role: pick(roles) };
      } else if (kind < 16) cmd = { op: "addDevice", id: `dev-${rand(1e6)}`, name: "Random device", org: pick(orgs), owner: null };
      else if (kind < 17) cmd = { op: "removeDevice", device: pick(devices) };
      else if (kind < 18) cmd = { op: "suspendOrg", org: pick(orgs.filter((o) => o !== "acme")) };
      else cmd = { op: "resumeOrg", org: pick(orgs.filter((o) => o !== "acme")) };
      if (cmd.op === "resumeOrg" || engine.decide(actor, cmd).allowed || tries === 19) return cmd;
    }
  };
}
