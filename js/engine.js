// fleetgate: the JS face of the wasm engine (SPEC §6). One wrapper, shared by the Node and web
// entries.
//
// Checks and lists work on *slots*, the engine's dense numbers for user and device ids (their
// Rust half is `EngineCore` in src/wasm.rs). A slot names the same id for the engine's life —
// the engine never reuses one, also across applyDelta/applySignedDelta; a removed entity leaves
// its slot vacant and every check on it denies — so the wrapper caches id → slot in a table per
// kind, filled on first use: V8 keeps a string's hash on the string, so a cached check is two
// property reads and one wasm call on three integers, with no bytes copied or hashed in wasm.
// The caches are null-prototype objects, not Maps: V8 keeps a large one as a hash dictionary
// whose lookup touches one array where a Map touches two (measured: 1.3–1.7× faster on 100k
// shuffled ids, where each cold memory access dominates). An id not in the cache is written
// into a scratch buffer in wasm memory (ids are ASCII) and looked up once; unknown ids are not
// cached (a later delta may add them). Lists come back as device slots in a buffer read in
// place and mapped to cached id strings.
//
// A freed handle has no pointer: every method checks `#core` first and throws, so nothing is
// ever written into memory the allocator has taken back. tests/js/drift.test.mjs checks that
// SCRATCH here equals SCRATCH in src/wasm.rs.

const MAX_ID = 128;
const SCRATCH = 512; // the scratch buffer's size (SCRATCH in src/wasm.rs)
const NO_SLOT = 0xffffffff; // "no slot" (u32::MAX in src/wasm.rs)
const INACTIVE = 0xfffffffe; // lookup's answer for a user who is not active (src/wasm.rs)
const USER = 0;
const DEVICE = 1;
const TOKEN = Symbol("fleetgate.core");
const encoder = new TextEncoder();
// `Symbol.dispose` (Node ≥ 20.4, recent browsers), else the well-known registry key the
// TypeScript and core-js polyfills use.
const DISPOSE = typeof Symbol.dispose === "symbol" ? Symbol.dispose : Symbol.for("Symbol.dispose");

/** The error every fleetgate call throws: a stable `code` (SPEC §6.4) and a message. */
export class FleetgateError extends Error {
  constructor(code, message, options) {
    super(message, options);
    this.name = "FleetgateError";
    this.code = code;
  }
}

/** Whether `e` is an error thrown by fleetgate (also across realms or duplicate copies). */
export function isFleetgateError(e) {
  return e instanceof FleetgateError || (e instanceof Error && e.name === "FleetgateError" && typeof e.code === "string");
}

// The wasm core throws plain `Error`s with `code` set (src/wasm.rs); they leave as FleetgateError.
function rethrow(e) {
  if (e instanceof FleetgateError) return e;
  if (e instanceof Error && typeof e.code === "string") {
    const out = new FleetgateError(e.code, e.message);
    if (e.stack) out.stack = e.stack.replace(/^Error/, "FleetgateError");
    return out;
  }
  return e;
}

function argError(message) {
  return new FleetgateError("INVALID_ARGUMENT", message);
}

function freedError() {
  return argError("this PolicyEngine was freed (free() or a `using` block ended)");
}

function actionCode(action) {
  if (action === undefined || action === null || action === "view") return 0;
  if (action === "control") return 1;
  throw argError(`unknown action \`${String(action)}\` (expected "view" or "control")`);
}

// `options.now` (unix seconds), by default the current time.
function nowOf(options) {
  if (options !== undefined && options !== null && typeof options !== "object") throw argError("options must be an object");
  const now = options?.now ?? Math.floor(Date.now() / 1000);
  if (typeof now !== "number" || !Number.isFinite(now) || now < 0) throw argError("`now` must be a finite number of unix seconds");
  return now;
}

// Non-strings can never be ids: they become "" (unknown), so checks deny instead of throwing.
const idOf = (s) => (typeof s === "string" ? s : "");

export function createPolicyEngine(raw) {
  let memory = null;
  let bytes = null;
  function buffer() {
    if (memory === null) memory = raw.wasmMemory();
    return memory.buffer;
  }
  // The memory as bytes; a view whose buffer was detached by a memory growth has length 0.
  function heap() {
    if (bytes === null || bytes.byteLength === 0) bytes = new Uint8Array(buffer());
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
    #core; // null once freed
    #ptr; // the scratch address; 0 once freed
    #names = []; // device slot → id, fetched as slots are first listed
    // User id → slot, for ids this engine was asked about and knows; -1 for a user who is not
    // active (every check by slot denies them), listed in `#denied` and forgotten when a delta
    // applies, which may activate them. (A cached slot of a user a delta suspends stays right:
    // wasm checks the status of a slot.)
    #users = Object.create(null);
    #denied = [];
    #devices = Object.create(null); // device id → slot
    #list = new Uint32Array(64); // filterDevices' slots, reused
    #all = null; // every device id in id order, once listed; dropped when a delta applies

    constructor(token, core) {
      if (token !== TOKEN) throw argError("use PolicyEngine.fromJson or PolicyEngine.fromSigned");
      this.#core = core;
      this.#ptr = core.scratchPtr();
    }

    // The live core, or a FleetgateError when freed (before anything touches wasm memory).
    #live() {
      const core = this.#core;
      if (core === null) throw freedError();
      return core;
    }

    // JSON text crosses as UTF-8 bytes from TextEncoder (a 10 MB snapshot: ~10 ms, against ~30 ms
    // for wasm-bindgen's string copy). Values JSON.stringify cannot write go to the core as they
    // are, which reports them with the right code.
    static fromJson(snapshot) {
      let text = snapshot;
      if (typeof snapshot === "object" && snapshot !== null) {
        try {
          text = JSON.stringify(snapshot);
        } catch {
          text = snapshot;
        }
      }
      let core;
      try {
        core = typeof text === "string" ? raw.EngineCore.fromUtf8(encoder.encode(text)) : raw.EngineCore.fromJson(text);
      } catch (e) {
        throw rethrow(e);
      }
      return new PolicyEngine(TOKEN, core);
    }

    static fromSigned(envelope, keys, options) {
      const now = nowOf(options);
      const minRevision = options?.minRevision ?? -1;
      if (typeof minRevision !== "number") throw argError("`minRevision` must be a number");
      let core;
      try {
        core = raw.EngineCore.fromSigned(envelope, keys ?? {}, now, minRevision);
      } catch (e) {
        throw rethrow(e);
      }
      return new PolicyEngine(TOKEN, core);
    }

    /** Verifies an access token (SPEC §4.5): `{user, session, expiresAt}` or a FleetgateError. */
    static verifyToken(token, keys, options) {
      if (typeof token !== "string") throw argError("token must be a string");
      try {
        return raw.EngineCore.verifyToken(token, keys ?? {}, nowOf(options));
      } catch (e) {
        throw rethrow(e);
      }
    }

    /** Every permission id with its label (SPEC §2), ascending: `{"devices.add": "Add Devices", …}`. */
    static permissionLabels() {
      const labels = {};
      for (const line of raw.permissionLabels().split("\n")) {
        const at = line.indexOf(":");
        if (at > 0) labels[line.slice(0, at)] = line.slice(at + 1);
      }
      return labels;
    }

    get revision() {
      return this.#live().revision;
    }

    /** The `expiresAt` of the last signed snapshot or delta accepted; null otherwise. */
    get expiresAt() {
      return this.#live().expiresAt ?? null;
    }

    /** Whether `free()` was called: every other member then throws INVALID_ARGUMENT. */
    get freed() {
      return this.#core === null;
    }

    // After a delta: the full list may have changed, and users cached as not active may be now.
    #changed() {
      this.#all = null;
      for (const id of this.#denied) delete this.#users[id];
      this.#denied = [];
    }

    /** Applies a signed delta (SPEC §4.4) atomically. */
    applySignedDelta(envelope, keys, options) {
      const core = this.#live();
      const now = nowOf(options);
      try {
        core.applySignedDelta(envelope, keys ?? {}, now);
        this.#changed();
      } catch (e) {
        throw rethrow(e);
      }
    }

    // The slot of a user (USER) or device (DEVICE) id not in `cache` yet: looked up in wasm
    // once and cached when known; -1 when the engine never saw the id (or it cannot be an id:
    // non-strings never reach a cache, where `cache[7]` would read key "7"), and -1, cached,
    // for a user who is not active.
    #resolve(core, cache, kind, id) {
      const len = put(heap(), this.#ptr, id);
      if (len < 0) return -1;
      const slot = core.lookup(kind, len);
      if (slot === NO_SLOT) return -1;
      if (slot === INACTIVE) {
        cache[id] = -1;
        this.#denied.push(id);
        return -1;
      }
      cache[id] = slot;
      return slot;
    }

    #slot(core, cache, kind, id) {
      if (typeof id !== "string") return -1;
      const slot = cache[id];
      return slot === undefined ? this.#resolve(core, cache, kind, id) : slot;
    }

    #can(user, device, action) {
      const core = this.#live();
      const u = this.#slot(core, this.#users, USER, user);
      if (u < 0) return false;
      const d = this.#slot(core, this.#devices, DEVICE, device);
      if (d < 0) return false;
      return core.canSlots(u, d, action);
    }

    canView(user, device) {
      return this.#can(user, device, 0);
    }

    canControl(user, device) {
      return this.#can(user, device, 1);
    }

    explain(user, device, action) {
      const core = this.#live();
      const a = actionCode(action);
      try {
        return core.explain(idOf(user), idOf(device), a);
      } catch (e) {
        throw rethrow(e);
      }
    }

    // The `n` device slots at `ptr` in wasm memory as ids, fetching the ids of slots not seen
    // before in one call.
    #ids(core, ptr, n) {
      const names = this.#names;
      const slots = new Uint32Array(buffer(), ptr, n);
      let max = 0;
      for (let i = 0; i < n; i++) max = slots[i] > max ? slots[i] : max;
      if (max >= names.length) {
        const fresh = core.deviceNamesFrom(names.length).split("\n");
        for (let i = 0; i < fresh.length; i++) names.push(fresh[i]);
      }
      const view = new Uint32Array(buffer(), ptr, n); // the fetch may have grown the memory
      const out = new Array(n);
      for (let i = 0; i < n; i++) out[i] = names[view[i]];
      return out;
    }

    visibleDevices(user, options) {
      const core = this.#live();
      if (options !== undefined && options !== null && typeof options !== "object") throw argError("options must be an object");
      const action = actionCode(options?.action);
      const active = options?.activeOrg;
      let n;
      if (active === undefined || active === null) {
        const u = this.#slot(core, this.#users, USER, user);
        if (u < 0) return [];
        n = core.visibleOfSlot(u, action);
      } else {
        try {
          n = core.visibleInOrg(idOf(user), action, idOf(active));
        } catch (e) {
          throw rethrow(e);
        }
      }
      if (n === 0) return [];
      // Every device (a root admin's list) is the same list until the next delta: kept, and
      // returned as a copy (callers may change what they get).
      if (n === core.deviceCount) {
        if (this.#all === null) {
          const count = core.deviceSlotsInOrder(); // before outPtr: filling may move the buffer
          this.#all = this.#ids(core, core.outPtr(), count);
        }
        return this.#all.slice();
      }
      return this.#ids(core, core.outPtr(), n);
    }

    // Resolves every id to its slot (cached), writes the slots into wasm memory in one copy and
    // reads back one word per id: one call, whatever the list length.
    filterDevices(user, devices, action) {
      const core = this.#live();
      if (!Array.isArray(devices)) throw argError("devices must be an array of ids");
      const a = actionCode(action);
      const n = devices.length;
      if (n === 0) return [];
      const u = this.#slot(core, this.#users, USER, user);
      if (u < 0) return [];
      if (this.#list.length < n) this.#list = new Uint32Array(Math.max(n, this.#list.length * 2));
      const list = this.#list;
      const cache = this.#devices;
      for (let i = 0; i < n; i++) {
        const slot = this.#slot(core, cache, DEVICE, devices[i]);
        list[i] = slot < 0 ? NO_SLOT : slot;
      }
      const ptr = core.slotsReserve(n);
      new Uint32Array(buffer(), ptr, n).set(list.subarray(0, n));
      const allowed = core.filterSlots(u, n, a);
      if (allowed === n) return devices.slice();
      const mask = new Uint32Array(buffer(), ptr, n);
      const out = new Array(allowed);
      for (let i = 0, j = 0; j < allowed; i++) if (mask[i] === 1) out[j++] = devices[i];
      return out;
    }

    switchableOrgs(user) {
      return this.#live().switchableOrgs(idOf(user));
    }

    permissionsIn(user, org) {
      return this.#live().permissionsIn(idOf(user), idOf(org));
    }

    decide(actor, command) {
      const core = this.#live();
      try {
        return core.decide(idOf(actor), command);
      } catch (e) {
        throw rethrow(e);
      }
    }

    preview(actor, command) {
      const core = this.#live();
      try {
        return core.preview(idOf(actor), command);
      } catch (e) {
        throw rethrow(e);
      }
    }

    /** The delta an allowed command causes (what the server will apply), or null when denied. */
    commandDelta(actor, command) {
      const core = this.#live();
      try {
        return core.commandDelta(idOf(actor), command);
      } catch (e) {
        throw rethrow(e);
      }
    }

    applyDelta(delta) {
      const core = this.#live();
      try {
        core.applyDelta(delta);
        this.#changed();
      } catch (e) {
        throw rethrow(e);
      }
    }

    project(viewer) {
      const core = this.#live();
      try {
        return core.project(idOf(viewer));
      } catch (e) {
        throw rethrow(e);
      }
    }

    toJson() {
      const core = this.#live();
      try {
        return core.toJson();
      } catch (e) {
        throw rethrow(e);
      }
    }

    /** Releases the wasm memory. Idempotent; afterwards every other member throws. */
    free() {
      const core = this.#core;
      if (core === null) return;
      this.#core = null;
      this.#ptr = 0;
      this.#names = [];
      this.#all = null;
      this.#users = Object.create(null);
      this.#denied = [];
      this.#devices = Object.create(null);
      core.free();
    }

    /** `using engine = PolicyEngine.fromJson(...)` frees it at the end of the block. */
    [DISPOSE]() {
      this.free();
    }
  }
  return PolicyEngine;
}
