// fleetgate for Node ≥ 20: the engine is ready on import, no init call needed. It instantiates
// the package's one `.wasm` (the web build's) synchronously from its bytes.
import { readFileSync } from "node:fs";
import * as raw from "./web/fleetgate.js";
import { createPolicyEngine } from "./engine.js";
export { FleetgateError, isFleetgateError } from "./engine.js";

raw.initSync({ module: readFileSync(new URL("./web/fleetgate_bg.wasm", import.meta.url)) });

export const PolicyEngine = createPolicyEngine(raw);

/** Present for symmetry with the web entry: in Node the module is initialised on import. */
export default async function init() {}

export function initSync() {}
