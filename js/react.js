// fleetgate/react: React (≥ 18) hooks over a PolicyEngine — one kept live by fleetgate/sync (or
// any source with `engine` and `subscribe()`), or a fixed engine.
//
// Every hook is `useSyncExternalStore` over the provider's source: its value is computed in
// `getSnapshot` from the engine the source shows *at that moment* (never from an engine kept
// from an earlier render, so never from one the sync client has freed since), cached per
// (engine, revision, notification) stamp, and kept identical when equal (an applied delta that
// does not change the answer does not re-render the component). A freed or missing engine
// reads as "no engine": `false`, `[]`, `null`.
import { createContext, createElement, useContext, useMemo, useRef, useSyncExternalStore } from "react";
import { FleetgateError } from "./engine.js";

const Context = createContext(null);

let nextId = 1;
const ids = new WeakMap();
const idOf = (engine) => {
  let id = ids.get(engine);
  if (id === undefined) ids.set(engine, (id = nextId++));
  return id;
};

const noop = () => {};

// One store per provider: counts the source's notifications (so even a change that keeps the
// engine and its revision re-runs the hooks) and shares one subscription to the source.
function createStore(source) {
  let version = 0;
  let unsubscribe = null;
  const listeners = new Set();
  return {
    source,
    get version() {
      return version;
    },
    subscribe(listener) {
      listeners.add(listener);
      if (unsubscribe === null) {
        const off = source.subscribe(() => {
          version++;
          for (const l of [...listeners]) l();
        });
        unsubscribe = typeof off === "function" ? off : noop;
      }
      return () => {
        listeners.delete(listener);
        if (listeners.size === 0 && unsubscribe !== null) {
          unsubscribe();
          unsubscribe = null;
        }
      };
    },
  };
}

const fixed = (engine) => ({ engine, subscribe: () => noop });

/**
 * Gives its children the engine of `sync` (a fleetgate/sync client, or any `{ engine,
 * subscribe(listener) }`) or a fixed `engine`.
 */
export function FleetgateProvider({ sync, engine, children }) {
  if ((sync == null) === (engine === undefined)) {
    throw new FleetgateError("INVALID_ARGUMENT", "FleetgateProvider needs exactly one of `sync` or `engine`");
  }
  if (sync != null && (typeof sync !== "object" || typeof sync.subscribe !== "function")) {
    throw new FleetgateError("INVALID_ARGUMENT", "FleetgateProvider: `sync` needs `engine` and `subscribe(listener)`");
  }
  const store = useMemo(() => createStore(sync ?? fixed(engine)), [sync, engine]);
  return createElement(Context.Provider, { value: store }, children);
}

function useStore(hook) {
  const store = useContext(Context);
  if (store === null) throw new FleetgateError("INVALID_ARGUMENT", `${hook} needs a <FleetgateProvider> above it`);
  return store;
}

const liveEngine = (store) => {
  const engine = store.source.engine ?? null;
  return engine !== null && !engine.freed ? engine : null;
};

const stampOf = (store, engine) => (engine === null ? `none:${store.version}` : `${idOf(engine)}:${engine.revision}:${store.version}`);

const sameArray = (a, b) => Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => x === b[i]);
const sameShallow = (a, b) => {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return false;
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => (Array.isArray(a[k]) ? sameArray(a[k], b[k]) : Object.is(a[k], b[k])));
};

// The value of `compute(engine)` for the engine the provider shows now; `empty` without one.
function useEngineValue(hook, key, compute, empty, equal) {
  const store = useStore(hook);
  const cache = useRef(null);
  const getSnapshot = () => {
    const engine = liveEngine(store);
    const stamp = stampOf(store, engine);
    const c = cache.current;
    if (c !== null && c.store === store && c.stamp === stamp && c.key === key) return c.value;
    let value = engine === null ? empty : compute(engine);
    if (c !== null && equal(c.value, value)) value = c.value;
    cache.current = { store, stamp, key, value };
    return value;
  };
  return useSyncExternalStore(store.subscribe, getSnapshot, getSnapshot);
}

const EMPTY = Object.freeze([]);

/** Whether `user` may `action` ("view", the default, or "control") `device`; false without an engine. */
export function useCan(user, device, action = "view") {
  return useEngineValue(
    "useCan",
    JSON.stringify([user, device, action]),
    (e) => (action === "control" ? e.canControl(user, device) : action === "view" ? e.canView(user, device) : e.explain(user, device, action).allowed),
    false,
    Object.is,
  );
}

/** The decision (with its code and reason) of a check; null without an engine. */
export function useExplain(user, device, action = "view") {
  return useEngineValue("useExplain", JSON.stringify([user, device, action]), (e) => e.explain(user, device, action), null, sameShallow);
}

/** The devices `user` may see (ascending ids), as `visibleDevices(user, options)`; [] without an engine. */
export function useVisibleDevices(user, options) {
  return useEngineValue("useVisibleDevices", JSON.stringify([user, options ?? null]), (e) => e.visibleDevices(user, options), EMPTY, sameArray);
}

/**
 * The decision of `command` by `actor` (SPEC §5) — for a button greyed out with its reason;
 * null without an engine or without a command.
 */
export function useDecision(actor, command) {
  return useEngineValue(
    "useDecision",
    JSON.stringify([actor, command ?? null]),
    (e) => (command == null ? null : e.decide(actor, command)),
    null,
    sameShallow,
  );
}

/**
 * The provider's state: `{ engine, revision, pending, status }` (`pending`/`status` from a sync
 * client; a fixed engine is `live`). Use `engine` during render only: it may be replaced later.
 */
export function useFleetgate() {
  const store = useStore("useFleetgate");
  const cache = useRef(null);
  const getSnapshot = () => {
    const engine = liveEngine(store);
    const src = store.source;
    const next = {
      engine,
      revision: engine === null ? null : engine.revision,
      pending: src.pending === true,
      status: typeof src.status === "string" ? src.status : engine === null ? "idle" : "live",
    };
    if (cache.current !== null && sameShallow(cache.current, next)) return cache.current;
    return (cache.current = next);
  };
  return useSyncExternalStore(store.subscribe, getSnapshot, getSnapshot);
}
