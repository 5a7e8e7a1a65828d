// Starts the real fleetgate-server for tests (loopback, random or given port) and stops it.
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
