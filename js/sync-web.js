// fleetgate/sync for browsers and bundlers: the sync client over the web entry's PolicyEngine;
// it calls the entry's `init()` itself before its first load (init is idempotent).
import init, { PolicyEngine } from "./web.js";
import { syncFor } from "./sync.js";

export { SyncError } from "./sync.js";
export const createSync = syncFor(PolicyEngine, () => init());
