// Shared by the edge suites and bench/edge.mjs: Ed25519 signing with node:crypto (envelopes of
// SPEC §4.4, access tokens of §4.5), starting the edge (edge/serve.mjs) and the server, polling
// with deadlines, and a small HTTP client. Keys are generated at run time.
import { spawn } from "node:child_process";
import { generateKeyPairSync, sign } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));

export const b64url = (bytes) => Buffer.from(bytes).toString("base64url");
export const nowS = () => Math.floor(Date.now() / 1000);

/** An Ed25519 signing key with a key id. */
export class SigningKey {
  constructor(keyId) {
    const { publicKey, privateKey } = generateKeyPairSync("ed25519");
    this.keyId = keyId;
    this.privateKey = privateKey;
    // The raw 32-byte public key is the end of its SPKI DER encoding.
    this.publicKey = b64url(publicKey.export({ format: "der", type: "spki" }).subarray(-32));
  }

  /** A signed envelope (§4.4) of a snapshot or delta object (or of raw JSON text). */
  envelope(doc) {
    const bytes = Buffer.from(typeof doc === "string" ? doc : JSON.stringify(doc), "utf8");
    return { format: "fleetgate/signed@1", keyId: this.keyId, payload: b64url(bytes), signature: b64url(sign(null, bytes, this.privateKey)) };
  }

  /** An access token (§4.5). `claims` overrides the defaults; `header` too. */
  token({ user, session, iat = nowS(), exp = iat + 300, claims = {}, header = {} }) {
    const h = b64url(JSON.stringify({ alg: "EdDSA", typ: "JWT", kid: this.keyId, ...header }));
    const c = b64url(JSON.stringify({ iss: "fleetgate", sub: user, sid: session, iat, exp, ...claims }));
    const input = `${h}.${c}`;
    return `${input}.${b64url(sign(null, Buffer.from(input), this.privateKey))}`;
  }
}

/** Polls `probe` until it returns a truthy value; throws with `what` (and the last value) at the deadline. */
export async function waitFor(what, probe, { timeout = 10000, interval = 25 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Spawns a process and resolves once a stdout line matches `ready` (with its match). */
export function spawnReady(cmd, args, { ready, env = {}, timeout = 60000, name = cmd } = {}) {
  const proc = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  proc.stderr.on("data", (c) => {
    err += c;
    if (process.env.EDGE_TEST_VERBOSE) process.stderr.write(`[${name}] ${c}`);
    if (err.length > 200000) err = err.slice(-100000);
  });
  proc.stderrText = () => err;
  const started = new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`${name} did not start in ${timeout} ms; stderr:\n${err.slice(-4000)}`)), timeout);
    proc.stdout.on("data", (c) => {
      out += c;
      const m = out.match(ready);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    proc.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? signal}) before it was ready; stderr:\n${err.slice(-4000)}`));
    });
  });
  return { proc, started };
}

/** Stops a child process: SIGTERM, then SIGKILL after `grace` ms; resolves when it has exited. */
export function stop(proc, grace = 3000) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill("SIGKILL"), grace);
    proc.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    proc.kill("SIGTERM");
  });
}

/** Starts the edge in workerd; `{proc, base, status()}`. */
export async function startEdge({ origin, edgeToken, pkg, readyTimeout }) {
  const args = [join(ROOT, "edge/serve.mjs"), "--origin", origin, "--edge-token", edgeToken, "--listen", "127.0.0.1:0"];
  if (pkg) args.push("--pkg", pkg);
  if (readyTimeout !== undefined) args.push("--ready-timeout", String(readyTimeout));
  const { proc, started } = spawnReady(process.execPath, args, { ready: /^listening on (127\.0\.0\.1:\d+)$/m, name: "edge" });
  const m = await started;
  const base = `http://${m[1]}`;
  return { proc, base, status: async () => (await fetch(`${base}/.fleetgate/edge`)).json() };
}

export function serverBinary() {
  const candidates = [process.env.FLEETGATE_SERVER, join(ROOT, "target/debug/fleetgate-server"), join(ROOT, "target/release/fleetgate-server")];
  const found = candidates.find((p) => p && existsSync(p));
  if (!found) throw new Error("build the server first (cargo build -p fleetgate-server) or set FLEETGATE_SERVER");
  return found;
}

/** Starts fleetgate-server; `{proc, base}`. */
export async function startServer(args) {
  const { proc, started } = spawnReady(serverBinary(), [...args, "--listen", "127.0.0.1:0"], {
    ready: /listening on (http:\/\/[\d.:]+)/,
    env: { RUST_LOG: process.env.RUST_LOG ?? "warn" },
    name: "server",
  });
  const m = await started;
  return { proc, base: m[1] };
}

/** A fetch that reads the body as text: `{status, headers, text, json()}`. */
export async function http(url, { method = "GET", headers = {}, body, token } = {}) {
  const h = { ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  if (body !== undefined && typeof body !== "string") {
    body = JSON.stringify(body);
    h["content-type"] ??= "application/json";
  }
  const res = await fetch(url, { method, headers: h, body, redirect: "manual" });
  const text = await res.text();
  return {
    status: res.status,
    headers: res.headers,
    text,
    edge: res.headers.get("x-fleetgate-edge"),
    revision: res.headers.get("x-fleetgate-revision"),
    json: () => JSON.parse(text),
  };
}
