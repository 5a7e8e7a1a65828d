// fleetgate for workerd (Cloudflare Workers): the engine is ready on import, no init call
// needed. workerd cannot compile wasm from fetched bytes, so the `.wasm` is imported as a module
// (wrangler and workerd configs give it as a compiled `WebAssembly.Module`) and instantiated
// synchronously. The same `.wasm` file as every other entry.
import wasmModule from "./web/fleetgate_bg.wasm";
import * as raw from "./web/fleetgate.js";
import { createPolicyEngine } from "./engine.js";
export { FleetgateError, isFleetgateError } from "./engine.js";

raw.initSync({ module: wasmModule });

export const PolicyEngine = createPolicyEngine(raw);

/** Present for symmetry with the web entry: in workerd the module is initialised on import. */
export default async function init() {}

export function initSync() {}
