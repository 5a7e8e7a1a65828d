// fleetgate: the JS face of the wasm engine (SPEC §6). One wrapper, shared by the Node and web
// entries. Checks write ids straight into a scratch buffer in wasm memory (ids are ASCII), and
// lists come back as device slot numbers mapped to cached id strings: no allocation or UTF-8
// round trip per call.

const MAX_ID = 128;
const TOKEN = Symbol("fleetgate.core");

function argError(message) {
  const err = new Error(message);
  err.name = "FleetgateError";
  err.code = "INVALID_ARGUMENT";
  return err;
}

function actionCode(action) {
  if (action === undefined || action === null || action === "view") return 0;
  if (action === "control") return 1;
  throw argError(`unknown action \`${String(action)}\` (expected "view" or "control")`);
}

// Non-strings can never be ids: they become "" (unknown), so checks deny instead of throwing.
const idOf = (s) => (typeof s === "string" ? s : "");

export function createPolicyEngine(raw) {
  let memory = null;
  let bytes = null;
  function heap() {
    if (memory === null) memory = raw.wasmMemory();
    const buf = memory.buffer;
    if (bytes === null || bytes.buffer !== buf) bytes = new Uint8Array(buf);
    return bytes;
  }
  // Writes an id at `at`; returns its length, or -1 when it cannot be an id (so it is unknown).
  function put(b, at, s) {
    if (typeof s !== "string") return -1;
    const n = s.length;
    if (n === 0 || n > MAX_ID) return -1;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c > 127) return -1;
      b[at + i] = c;
    }
    return n;
  }

  class PolicyEngine {
    #core;
    #ptr;
    #names = [];

    constructor(token, core) {
      if (token !== TOKEN) throw argError("use PolicyEngine.fromJson or PolicyEngine.fromSigned");
      this.#core = core;
      this.#ptr = core.scratchPtr();
    }

    static fromJson(snapshot) {
      return new PolicyEngine(TOKEN, raw.EngineCore.fromJson(snapshot));
    }

    static fromSigned(envelope, keys, options) {
      const now = options?.now ?? Math.floor(Date.now() / 1000);
      const minRevision = options?.minRevision ?? -1;
      if (typeof now !== "number" || typeof minRevision !== "number") throw argError("`now` and `minRevision` must be numbers");
      return new PolicyEngine(TOKEN, raw.EngineCore.fromSigned(envelope, keys ?? {}, now, minRevision));
    }

    get revision() {
      return this.#core.revision;
    }

    #can(user, device, action) {
      const b = heap();
      const p = this.#ptr;
      const ul = put(b, p, user);
      if (ul < 0) return false;
      const dl = put(b, p + ul, device);
      if (dl < 0) return false;
      return this.#core.canScratch(ul, dl, action);
    }

    canView(user, device) {
      return this.#can(user, device, 0);
    }

    canControl(user, device) {
      return this.#can(user, device, 1);
    }

    explain(user, device, action) {
      return this.#core.explain(idOf(user), idOf(device), actionCode(action));
    }

    // Maps device slots to ids, fetching the ids of slots not seen before in one call.
    #ids(slots) {
      const names = this.#names;
      let max = -1;
      for (let i = 0; i < slots.length; i++) if (slots[i] > max) max = slots[i];
      if (max >= names.length) {
        const fresh = this.#core.deviceNamesFrom(names.length).split("\n");
        for (let i = 0; i < fresh.length; i++) names.push(fresh[i]);
      }
      const out = new Array(slots.length);
      for (let i = 0; i < slots.length; i++) out[i] = names[slots[i]];
      return out;
    }

    visibleDevices(user, options) {
      if (options !== undefined && options !== null && typeof options !== "object") throw argError("options must be an object");
      const action = actionCode(options?.action);
      const active = options?.activeOrg;
      const activeOrg = active === undefined || active === null ? undefined : idOf(active);
      return this.#ids(this.#core.visibleSlots(idOf(user), action, activeOrg));
    }

    filterDevices(user, devices, action) {
      if (!Array.isArray(devices)) throw argError("devices must be an array of ids");
      const a = actionCode(action);
      if (devices.length === 0) return [];
      const joined = devices.map((d) => (typeof d === "string" && !d.includes("\n") ? d : "")).join("\n");
      const mask = this.#core.filterMask(idOf(user), joined, a);
      return devices.filter((_, i) => mask[i] === 1);
    }

    switchableOrgs(user) {
      return this.#core.switchableOrgs(idOf(user));
    }

    permissionsIn(user, org) {
      return this.#core.permissionsIn(idOf(user), idOf(org));
    }

    decide(actor, command) {
      return this.#core.decide(idOf(actor), command);
    }

    preview(actor, command) {
      return this.#core.preview(idOf(actor), command);
    }

    /** The delta an allowed command causes (what the server will apply), or null when denied. */
    commandDelta(actor, command) {
      return this.#core.commandDelta(idOf(actor), command);
    }

    applyDelta(delta) {
      this.#core.applyDelta(delta);
    }

    project(viewer) {
      return this.#core.project(idOf(viewer));
    }

    toJson() {
      return this.#core.toJson();
    }

    free() {
      this.#core.free();
    }
  }
  return PolicyEngine;
}
