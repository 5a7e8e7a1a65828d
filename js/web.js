// fleetgate for browsers, bundlers and workers: `await init()` first (or `initSync`).
import rawInit, * as raw from "./web/fleetgate.js";
import { createPolicyEngine } from "./engine.js";
export { FleetgateError, isFleetgateError } from "./engine.js";

export const PolicyEngine = createPolicyEngine(raw);

/**
 * Instantiates the wasm module. `input` may be a URL, a Response, the `.wasm` bytes or a
 * compiled `WebAssembly.Module` (as edge runtimes give it); without it the `.wasm` next to
 * this file is fetched.
 */
export default async function init(input) {
  if (input === undefined) return rawInit();
  return rawInit({ module_or_path: input });
}

/** Synchronous instantiation from bytes or a compiled `WebAssembly.Module`. */
export function initSync(module) {
  return raw.initSync({ module });
}
