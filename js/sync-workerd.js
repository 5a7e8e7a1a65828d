// fleetgate/sync for workerd: the sync client over the workerd entry's PolicyEngine.
import { PolicyEngine } from "./workerd.js";
import { syncFor } from "./sync.js";

export { SyncError } from "./sync.js";
export const createSync = syncFor(PolicyEngine, null);
