#!/usr/bin/env node
// Runs the edge worker locally in workerd (from the npm package `workerd`):
//   node edge/serve.mjs --origin URL --edge-token TOKEN --listen HOST:PORT [--pkg DIR]
// It writes a workerd config into a temporary directory (the worker, the `fleetgate` package's
// workerd entry and its modules, the `.wasm` as a wasm module, the ORIGIN and EDGE_TOKEN bindings,
// and a network service that may reach loopback origins), starts `workerd serve`, waits until it
// answers (asking the status route, which starts the follower), prints `listening on HOST:PORT`,
// and passes SIGINT/SIGTERM on to workerd. `--listen HOST:0` picks a free port.
import { spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "..");
const STATUS_PATH = "/.fleetgate/edge";
const COMPATIBILITY_DATE = "2025-06-01"; // keep equal to edge/wrangler.toml
const USAGE = "usage: node edge/serve.mjs --origin URL --edge-token TOKEN --listen HOST:PORT [--pkg DIR] [--workerd PATH] [--ready-timeout SECONDS]";

function fail(message, code = 2) {
  process.stderr.write(`edge/serve: ${message}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const opts = { pkg: join(ROOT, "pkg"), workerd: null, readyTimeout: 10 };
  const names = { "--origin": "origin", "--edge-token": "edgeToken", "--listen": "listen", "--pkg": "pkg", "--workerd": "workerd", "--ready-timeout": "readyTimeout" };
  for (let i = 0; i < argv.length; i++) {
    let [flag, value] = argv[i].split(/=(.*)/s, 2);
    if (flag === "--help" || flag === "-h") {
      process.stdout.write(USAGE + "\n");
      process.exit(0);
    }
    const name = names[flag];
    if (!name) fail(`unknown argument \`${argv[i]}\`\n${USAGE}`);
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) fail(`\`${flag}\` needs a value\n${USAGE}`);
    }
    opts[name] = value;
  }
  for (const need of ["origin", "edgeToken", "listen"]) if (!opts[need]) fail(`missing --${need.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase())}\n${USAGE}`);
  try {
    const u = new URL(opts.origin);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
  } catch {
    fail(`--origin must be an http(s) URL, not \`${opts.origin}\``);
  }
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(opts.listen);
  if (!m || Number(m[2]) > 65535) fail(`--listen must be HOST:PORT, not \`${opts.listen}\``);
  opts.host = m[1];
  opts.port = Number(m[2]);
  opts.readyTimeout = Number(opts.readyTimeout);
  if (!Number.isFinite(opts.readyTimeout) || opts.readyTimeout < 0) fail("--ready-timeout must be a number of seconds");
  return opts;
}

/** A free TCP port on `host` (bound, then released for workerd). */
function freePort(host) {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, host.replace(/^\[|\]$/g, ""), () => {
      const { port } = s.address();
      s.close(() => resolvePort(port));
    });
  });
}

function workerdBinary(explicit) {
  const candidates = [explicit, process.env.WORKERD, join(ROOT, "node_modules/.bin/workerd")];
  const found = candidates.find((p) => p && existsSync(p));
  if (!found) fail("workerd not found: run `npm ci` (the `workerd` dev dependency) or pass --workerd PATH", 1);
  return found;
}

/** The package's workerd entry, from its package.json `exports` conditions. */
function workerdEntry(pkgDir) {
  const file = join(pkgDir, "package.json");
  if (!existsSync(file)) fail(`no package at ${pkgDir} (build it with scripts/build-pkg.sh, or pass --pkg DIR)`, 1);
  const meta = JSON.parse(readFileSync(file, "utf8"));
  let dot = meta.exports?.["."] ?? meta.exports;
  const pick = (node) => {
    if (typeof node === "string") return node;
    if (node && typeof node === "object") {
      for (const cond of ["workerd", "worker", "default"]) if (cond in node) return pick(node[cond]);
    }
    return null;
  };
  const entry = pick(dot) ?? meta.module ?? meta.main;
  if (!entry) fail(`${file} names no workerd entry`, 1);
  return entry.replace(/^\.\//, "");
}

/** Every ES module and wasm file of the package (the CommonJS Node build is left out). */
function packageModules(pkgDir) {
  const out = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const rel = relative(pkgDir, path).split(sep).join("/");
      if (statSync(path).isDirectory()) {
        if (rel !== "node" && name !== "node_modules") walk(path);
      } else if (/\.(m?js)$/.test(name) && rel !== "node.mjs") out.push({ rel, type: "esModule" });
      else if (name.endsWith(".wasm")) out.push({ rel, type: "wasm" });
    }
  };
  walk(pkgDir);
  return out;
}

const capnpString = (s) => {
  if (/[\u0000-\u001f\u007f]/.test(s)) fail(`control characters cannot go into the workerd config: \`${JSON.stringify(s)}\``);
  return `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
};

/** Writes the config and the modules it embeds into `dir`; returns the config path. */
function writeConfig(dir, { pkgDir, host, port }) {
  const PREFIX = "node_modules/fleetgate";
  const entry = workerdEntry(pkgDir);
  const modules = [{ name: "worker.js", type: "esModule", file: "worker.js" }];
  copyFileSync(join(HERE, "worker.js"), join(dir, "worker.js"));
  // `import … from "fleetgate"` in worker.js resolves to the module named `fleetgate`.
  writeFileSync(join(dir, "fleetgate.js"), `export * from "./${PREFIX}/${entry}";\n`);
  modules.push({ name: "fleetgate", type: "esModule", file: "fleetgate.js" });
  for (const m of packageModules(pkgDir)) {
    const file = join(PREFIX, m.rel);
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    copyFileSync(join(pkgDir, m.rel), join(dir, file));
    modules.push({ name: `${PREFIX}/${m.rel}`, type: m.type, file });
  }
  if (!modules.some((m) => m.name === `${PREFIX}/${entry}`)) fail(`the package's workerd entry \`${entry}\` is missing from ${pkgDir}`, 1);
  const config = `# Generated by edge/serve.mjs: the fleetgate edge worker in workerd.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "edge", worker = .edge),
    # The origin is usually on loopback or a private network: allow every address.
    (name = "internet", network = (allow = ["public", "private", "local"], tlsOptions = (trustBrowserCas = true))),
  ],
  sockets = [(name = "http", address = ${capnpString(`${host}:${port}`)}, http = (), service = "edge")],
);

const edge :Workerd.Worker = (
  modules = [
${modules.map((m) => `    (name = ${capnpString(m.name)}, ${m.type} = embed ${capnpString(m.file)}),`).join("\n")}
  ],
  bindings = [
    (name = "ORIGIN", fromEnvironment = "FLEETGATE_EDGE_ORIGIN"),
    (name = "EDGE_TOKEN", fromEnvironment = "FLEETGATE_EDGE_TOKEN"),
  ],
  compatibilityDate = ${capnpString(COMPATIBILITY_DATE)},
  globalOutbound = "internet",
);
`;
  const path = join(dir, "edge.capnp");
  writeFileSync(path, config);
  return path;
}

async function waitServing(base, child, deadlineMs) {
  while (Date.now() < deadlineMs) {
    if (child.exitCode !== null || child.signalCode !== null) return null;
    try {
      const res = await fetch(base + STATUS_PATH, { signal: AbortSignal.timeout(2000) });
      if (res.ok) return await res.json();
    } catch {
      // not serving yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return null;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const pkgDir = resolve(opts.pkg);
  const binary = workerdBinary(opts.workerd);
  const port = opts.port === 0 ? await freePort(opts.host) : opts.port;
  const dir = mkdtempSync(join(tmpdir(), "fleetgate-edge-"));
  let child = null;
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  process.on("exit", cleanup);
  const config = writeConfig(dir, { pkgDir, host: opts.host, port });
  child = spawn(binary, ["serve", config, "--verbose"], {
    cwd: dir,
    env: { ...process.env, FLEETGATE_EDGE_ORIGIN: opts.origin, FLEETGATE_EDGE_TOKEN: opts.edgeToken },
    stdio: ["ignore", "pipe", "inherit"],
  });
  child.stdout.pipe(process.stderr); // our stdout says only `listening on …`
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
    process.on(sig, () => {
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
      else process.exit(1);
    });
  }
  child.on("exit", (code, signal) => {
    cleanup();
    process.exit(code ?? (signal ? 0 : 1));
  });
  child.on("error", (err) => fail(`cannot start workerd: ${err.message}`, 1));

  const base = `http://${opts.host}:${port}`;
  let st = await waitServing(base, child, Date.now() + 30000);
  if (st === null) {
    child.kill("SIGTERM");
    fail(`workerd did not serve on ${opts.host}:${port}`, 1);
  }
  // The first request started the follower; give it a moment to load the snapshot.
  const ready = Date.now() + opts.readyTimeout * 1000;
  while (st && st.state !== "ready" && Date.now() < ready) {
    await new Promise((r) => setTimeout(r, 50));
    st = await waitServing(base, child, Date.now() + 2000);
  }
  if (st?.state !== "ready") process.stderr.write(`edge/serve: not ready yet (${st?.state}): requests are forwarded (bypass) until it is\n`);
  process.stdout.write(`listening on ${opts.host}:${port}\n`);
}

main().catch((err) => fail(err?.stack ?? String(err), 1));
