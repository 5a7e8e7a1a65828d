// fleetgate/sync for Node ≥ 20: the sync client over the Node entry's PolicyEngine.
import { PolicyEngine } from "./node.mjs";
import { syncFor } from "./sync.js";

export { SyncError } from "./sync.js";
export const createSync = syncFor(PolicyEngine, null);
