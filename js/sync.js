// fleetgate/sync: keeps a PolicyEngine equal to the server's projection for the caller (SPEC §7).
// Loads `/api/snapshot` as text (with `If-None-Match`), follows `/api/events` (server-sent
// events read from a streaming fetch, so it runs the same in browsers, Node and workers),
// applies each `delta`, catches up with `/api/deltas?since=` when a delta does not follow
// (`REVISION_MISMATCH`) and after every reconnect, and reloads the snapshot on `resync`, 410
// (the change log no longer reaches back) and 409 (another history).
//
// INVARIANT: `sync.engine` is always a complete, live engine (or null before the first load).
// A reloaded engine becomes visible only once built; the engine it replaces is freed only after
// the new one is visible. Deltas apply atomically (the engine's own guarantee), so a failed
// delta leaves the visible engine exactly as it was.
import { FleetgateError, isFleetgateError } from "./engine.js";

/** An HTTP or network failure of the sync client: `code` is the server's error code when it
 * sent one (e.g. `UNAUTHENTICATED`), else `HTTP_<status>` or `NETWORK`. */
export class SyncError extends Error {
  constructor(code, message, status) {
    super(message);
    this.name = "SyncError";
    this.code = code;
    this.status = status;
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });

/** The one error of a lost connection on `path` (a request, a body or the event stream). */
const networkError = (path, e) => new SyncError("NETWORK", `${path}: ${e?.message ?? e}`, 0);

/** A response's body as text; a connection lost while reading it is a NETWORK `SyncError`. */
async function bodyText(res, path, signal) {
  try {
    return await res.text();
  } catch (e) {
    if (signal.aborted) throw e;
    throw networkError(path, e);
  }
}

/** Reads server-sent events from a fetch body: yields `{event, data, id}`. */
async function* sseEvents(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let event = "";
  let data = [];
  let id = null;
  const onAbort = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", onAbort, { once: true });
  let ended = false;
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (e) {
        // A reset connection (the server killed, the network gone) fails the read: the same
        // NETWORK error a failed fetch gives, so `onError` sees one kind of connection loss.
        if (signal.aborted) return;
        throw networkError("/api/events", e);
      }
      const { value, done } = chunk;
      if (done) {
        ended = true;
        return;
      }
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === "\r" && buf[nl + 1] === "\n" ? 2 : 1));
        if (line === "") {
          if (data.length > 0 || event !== "") yield { event: event || "message", data: data.join("\n"), id };
          event = "";
          data = [];
          continue;
        }
        if (line[0] === ":") continue; // a comment (keep-alive)
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value2 = colon < 0 ? "" : line.slice(colon + 1);
        if (value2[0] === " ") value2 = value2.slice(1);
        if (field === "event") event = value2;
        else if (field === "data") data.push(value2);
        else if (field === "id") id = value2;
      }
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    // Left early (the caller stopped reading, or handling an event threw): close the stream,
    // so the old connection does not stay open beside the next one.
    if (!ended) reader.cancel().catch(() => {});
    reader.releaseLock?.();
  }
}

/** Builds `createSync` for one entry's PolicyEngine and init. */
export function syncFor(PolicyEngine, init) {
  return function createSync(options = {}) {
    return new Sync(PolicyEngine, init, options);
  };
}

class Sync {
  #Engine;
  #init;
  #base;
  #fetch;
  #getToken;
  #activateOnLoad;
  #onUpdate;
  #onError;
  #retryMin;
  #retryMax;
  #visible = null; // the engine `engine` returns
  #head = null; // the newest engine: `#visible`, or a staged one while `pending`
  #etag = null;
  #status = "idle";
  #abort = null;
  #running = null;
  #listeners = new Set();
  #ready;
  #resolveReady;
  #closed = false;

  constructor(PolicyEngine, init, options) {
    if (options === null || typeof options !== "object") throw new FleetgateError("INVALID_ARGUMENT", "createSync needs an options object");
    const { baseUrl = "", fetch: f, getToken, activateOnLoad = true, onUpdate, onError, retry, start = true } = options;
    this.#Engine = PolicyEngine;
    this.#init = init;
    this.#base = String(baseUrl).replace(/\/+$/, "");
    const fetchFn = f ?? globalThis.fetch;
    if (typeof fetchFn !== "function") throw new FleetgateError("INVALID_ARGUMENT", "no fetch: pass `fetch`");
    // Called unbound: a browser's `window.fetch` throws "Illegal invocation" when called as a method of another object.
    this.#fetch = f ? (...args) => f(...args) : (...args) => globalThis.fetch(...args);
    this.#getToken = getToken;
    this.#activateOnLoad = activateOnLoad !== false;
    this.#onUpdate = onUpdate;
    this.#onError = onError;
    this.#retryMin = retry?.min ?? 500;
    this.#retryMax = retry?.max ?? 15000;
    this.#ready = new Promise((resolve) => (this.#resolveReady = resolve));
    if (start) this.start();
  }

  /** The visible engine (null before the first load). Read it each time: it is replaced on a reload. */
  get engine() {
    return this.#visible;
  }

  /** The visible engine's revision (null before the first load). */
  get revision() {
    return this.#visible === null ? null : this.#visible.revision;
  }

  /** Whether a newer state is loaded but not yet visible (`activateOnLoad: false`): call `activate()`. */
  get pending() {
    return this.#head !== this.#visible;
  }

  /** `"idle"`, `"loading"`, `"live"` (following events), `"reconnecting"` or `"stopped"`. */
  get status() {
    return this.#status;
  }

  /** Resolves once the first engine is visible. */
  get ready() {
    return this.#ready;
  }

  /** Calls `listener()` after every change of `engine`, `revision`, `pending` or `status`; returns the unsubscribe. */
  subscribe(listener) {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Makes the pending state visible (frees the engine it replaces); false when nothing is pending. */
  activate() {
    if (this.#head === this.#visible) return false;
    this.#show(this.#head, "activate");
    return true;
  }

  /** Starts (or resumes) following the server. */
  start() {
    if (this.#closed) throw new FleetgateError("INVALID_ARGUMENT", "this sync client was closed");
    if (this.#running) return;
    const abort = new AbortController();
    this.#abort = abort;
    this.#running = this.#run(abort.signal).finally(() => {
      if (this.#abort === abort) this.#running = null;
    });
  }

  /** Stops following; the engine stays visible and usable. Resolves when nothing is in flight. */
  async stop() {
    const running = this.#running;
    this.#abort?.abort();
    this.#abort = null;
    this.#running = null;
    await running;
    this.#setStatus("stopped");
  }

  /** Stops and frees every engine. */
  async close() {
    await this.stop();
    this.#closed = true;
    const head = this.#head;
    const visible = this.#visible;
    this.#head = this.#visible = null;
    this.#emit();
    if (head !== visible) head?.free();
    visible?.free();
  }

  [typeof Symbol.asyncDispose === "symbol" ? Symbol.asyncDispose : Symbol.for("Symbol.asyncDispose")]() {
    return this.close();
  }

  // ---- the loop ---------------------------------------------------------------------------------

  async #run(signal) {
    let delay = this.#retryMin;
    let fresh = false;
    while (!signal.aborted) {
      try {
        if (this.#head === null) {
          this.#setStatus("loading");
          await this.#loadSnapshot(signal);
          fresh = true;
        }
        if (!fresh) await this.#catchUp(signal);
        fresh = false;
        await this.#follow(signal, () => {
          delay = this.#retryMin;
        });
      } catch (e) {
        if (signal.aborted) break;
        this.#report(e);
        if (e instanceof SyncError && e.status === 401) {
          this.#setStatus("stopped");
          break;
        }
      }
      if (signal.aborted) break;
      this.#setStatus("reconnecting");
      await sleep(delay * (0.75 + Math.random() / 2), signal);
      delay = Math.min(this.#retryMax, delay * 2);
    }
  }

  async #request(path, signal, headers = {}) {
    const h = { ...headers };
    const token = typeof this.#getToken === "function" ? await this.#getToken() : undefined;
    if (token) h.authorization = `Bearer ${token}`;
    let res;
    try {
      res = await this.#fetch(this.#base + path, { headers: h, signal, cache: "no-store" });
    } catch (e) {
      if (signal.aborted) throw e;
      throw networkError(path, e);
    }
    return res;
  }

  async #failure(res, path) {
    const text = await res.text().catch(() => "");
    let code = `HTTP_${res.status}`;
    let message = `${path}: ${res.status} ${res.statusText}`;
    try {
      const body = JSON.parse(text);
      if (typeof body?.error?.code === "string") code = body.error.code;
      if (typeof body?.error?.message === "string") message = `${path}: ${body.error.message}`;
    } catch {
      // not a JSON error body
    }
    return new SyncError(code, message, res.status);
  }

  async #loadSnapshot(signal) {
    await this.#init?.();
    const res = await this.#request("/api/snapshot", signal, this.#etag && this.#head ? { "if-none-match": this.#etag } : {});
    if (res.status === 304) return;
    if (!res.ok) throw await this.#failure(res, "/api/snapshot");
    const text = await bodyText(res, "/api/snapshot", signal);
    if (signal.aborted) return;
    const engine = this.#Engine.fromJson(text); // throws before anything changes
    this.#etag = res.headers.get("etag");
    this.#install(engine, "snapshot");
  }

  // `/api/deltas?since=<head>`: the merged delta since then; 410/409 → the snapshot.
  async #catchUp(signal) {
    const since = this.#head.revision;
    const res = await this.#request(`/api/deltas?since=${since}`, signal);
    if (res.status === 410 || res.status === 409) {
      await res.body?.cancel();
      return this.#loadSnapshot(signal);
    }
    if (!res.ok) throw await this.#failure(res, "/api/deltas");
    const list = JSON.parse(await bodyText(res, "/api/deltas", signal));
    if (signal.aborted) return;
    for (const delta of Array.isArray(list) ? list : [list]) {
      if (delta.to <= this.#head.revision) continue;
      try {
        this.#applyDelta(delta);
      } catch (e) {
        this.#report(e);
        return this.#loadSnapshot(signal);
      }
    }
  }

  async #follow(signal, connected) {
    const res = await this.#request("/api/events", signal, {
      accept: "text/event-stream",
      "last-event-id": String(this.#head.revision),
    });
    if (!res.ok || !res.body) throw await this.#failure(res, "/api/events");
    this.#setStatus("live");
    connected();
    for await (const ev of sseEvents(res.body, signal)) {
      if (signal.aborted) return;
      if (ev.event === "resync") {
        await this.#loadSnapshot(signal);
      } else if (ev.event === "delta") {
        let delta;
        try {
          delta = JSON.parse(ev.data);
        } catch {
          await this.#catchUp(signal);
          continue;
        }
        if (typeof delta?.to === "number" && delta.to <= this.#head.revision) continue;
        try {
          this.#applyDelta(delta);
        } catch (e) {
          if (!(isFleetgateError(e) && e.code === "REVISION_MISMATCH")) this.#report(e);
          await this.#catchUp(signal); // does not follow (or broke): catch up, or reload on 410
        }
      }
    }
    if (!signal.aborted) throw networkError("/api/events", "the stream ended");
  }

  // ---- state changes ------------------------------------------------------------------------------

  // Applies one delta to the head. With `activateOnLoad: false` the visible engine is never
  // changed in place: the head becomes a copy first.
  #applyDelta(delta) {
    if (!this.#activateOnLoad && this.#head === this.#visible) {
      const copy = this.#Engine.fromJson(this.#visible.toJson());
      try {
        copy.applyDelta(delta);
      } catch (e) {
        copy.free();
        throw e;
      }
      this.#head = copy;
      this.#changed("delta");
      return;
    }
    this.#head.applyDelta(delta); // atomic: on error the head is unchanged
    this.#changed("delta");
  }

  // A complete new engine: visible now (activateOnLoad, or the first load), else staged.
  #install(engine, reason) {
    if (this.#activateOnLoad || this.#visible === null) {
      this.#show(engine, reason);
      return;
    }
    const old = this.#head;
    this.#head = engine;
    if (old !== this.#visible) old?.free();
    this.#changed(reason);
  }

  // Makes `engine` the visible one (and the head); frees every engine it replaces afterwards.
  #show(engine, reason) {
    const oldVisible = this.#visible;
    const oldHead = this.#head;
    this.#visible = engine;
    this.#head = engine;
    if (this.#resolveReady) {
      this.#resolveReady(this);
      this.#resolveReady = null;
    }
    this.#changed(reason);
    if (oldHead !== null && oldHead !== engine && oldHead !== oldVisible) oldHead.free();
    if (oldVisible !== null && oldVisible !== engine) oldVisible.free();
  }

  #changed(reason) {
    try {
      this.#onUpdate?.({ reason, revision: this.revision, headRevision: this.#head?.revision ?? null, pending: this.pending });
    } catch (e) {
      this.#report(e);
    }
    this.#emit();
  }

  #setStatus(status) {
    if (this.#status === status) return;
    this.#status = status;
    this.#emit();
  }

  #emit() {
    for (const l of [...this.#listeners]) {
      try {
        l();
      } catch (e) {
        this.#report(e);
      }
    }
  }

  #report(e) {
    try {
      this.#onError?.(e);
    } catch {
      // an onError that throws must not stop the client
    }
  }
}
