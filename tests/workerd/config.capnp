# workerd config of the package test (tests/workerd/workerd.test.mjs): the test worker, the
# package's workerd entry under the name "fleetgate" (what wrangler resolves through the
# `workerd` export condition), the package files it imports, its one `.wasm` as a wasm module,
# and every conformance vector file as a json module. The socket's address is given on the
# command line (--socket-addr http=127.0.0.1:PORT).
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [(name = "main", worker = .testWorker)],
  sockets = [(name = "http", address = "127.0.0.1:8787", http = (), service = "main")],
);

const testWorker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "replay.js", esModule = embed "../js/replay.js"),
    (name = "fleetgate", esModule = embed "../../pkg/workerd.js"),
    (name = "engine.js", esModule = embed "../../pkg/engine.js"),
    (name = "web/fleetgate.js", esModule = embed "../../pkg/web/fleetgate.js"),
    (name = "web/fleetgate_bg.wasm", wasm = embed "../../pkg/web/fleetgate_bg.wasm"),
    (name = "vectors/commands.json", json = embed "../vectors/commands.json"),
    (name = "vectors/cross-tree.json", json = embed "../vectors/cross-tree.json"),
    (name = "vectors/deltas.json", json = embed "../vectors/deltas.json"),
    (name = "vectors/errors.json", json = embed "../vectors/errors.json"),
    (name = "vectors/loading.json", json = embed "../vectors/loading.json"),
    (name = "vectors/manufacturer.json", json = embed "../vectors/manufacturer.json"),
    (name = "vectors/projection.json", json = embed "../vectors/projection.json"),
    (name = "vectors/reasons.json", json = embed "../vectors/reasons.json"),
    (name = "vectors/signed.json", json = embed "../vectors/signed.json"),
  ],
  compatibilityDate = "2025-09-01",
);
