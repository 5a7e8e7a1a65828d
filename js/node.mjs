// fleetgate for Node ≥ 20: the engine is ready on import, no init call needed.
import { createRequire } from "node:module";
import { createPolicyEngine } from "./engine.js";

const raw = createRequire(import.meta.url)("./node/fleetgate.js");

export const PolicyEngine = createPolicyEngine(raw);

/** Present for symmetry with the web entry: in Node the module is initialised on import. */
export default async function init() {}

export function initSync() {}
