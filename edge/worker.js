// fleetgate edge gateway (SPEC §8): a workerd / Cloudflare Workers module that sits in front of
// fleetgate-server. It holds the server's signed full snapshot in the wasm engine, kept current
// by the signed delta stream, and
//   - gates `POST /api/devices/{id}/commands`: verifies the caller's access token locally, denies
//     without calling the server, forwards allowed requests unchanged;
//   - answers `GET /api/devices` itself, byte-for-byte what the server would answer;
//   - forwards everything else unchanged.
// Every answer carries `x-fleetgate-edge` and `x-fleetgate-revision`. With no valid state (not
// loaded yet, or past `expiresAt`) it decides nothing and forwards (`bypass`).
//
// workerd rules this follows: no I/O at module scope; a stream opened in one request's context
// can only be read in that context, so the follower runs inside the `ctx.waitUntil` of the request
// that started it and is restarted by a later request when it dies or stalls. The engine, the key
// set and the revoked sessions are plain module state that every request reads.
import { PolicyEngine } from "fleetgate";

/** The status route (readiness and diagnostics). */
const STATUS_PATH = "/.fleetgate/edge";

const POLL_MS = 1000; // polling interval when the event stream is down (propagation ≤ 2 s)
const EVENTS_RETRY_MS = 5000; // how long to poll before trying the event stream again
const BEAT_MS = 1000; // the follower proves it is alive at least this often
const STALL_MS = 5000; // a follower silent for longer is presumed dead and replaced
const STREAM_IDLE_MS = 75000; // no byte on the stream (not even a keep-alive) for this long: reconnect
const FETCH_TIMEOUT_MS = 15000; // a control-plane request to the origin
const SNAPSHOT_TIMEOUT_MS = 120000; // the full snapshot (10+ MB for a large fleet), read whole
const RETRY_MIN_MS = 500; // back-off after a failed load, doubling up to RETRY_MAX_MS
const RETRY_MAX_MS = 10000;
const KEY_REFRESH_MIN_MS = 1000; // unknown key ids refresh the key set at most this often
const RENEW_MARGIN_S = 60; // polling: refetch the snapshot when it expires within this margin
const REVOKED_KEEP_MS = 15 * 60 * 1000; // access tokens live ≤ 300 s (+60 s clock skew)
const MAX_HEADER_BYTES = 64 * 1024;
const MAX_TOKEN_BYTES = 4096; // the server looks at no longer access token either

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const OPAQUE_TOKEN = /^[A-Za-z0-9._~+/=-]{16,512}$/;
const COMMANDS_PATH = /^\/api\/devices\/([^/]+)\/commands$/;

// ---- module state (shared by every request of this isolate) ---------------------------------

const state = {
  /** @type {PolicyEngine | null} the last good state */
  engine: null,
  /** the last revision accepted: anything older is a rollback */
  revision: null,
  /** @type {Record<string, string> | null} keyId → base64url public key */
  keys: null,
  keysAt: 0, // ms of the last successful key-set fetch
  keyRefreshAt: 0, // ms of the last key-set fetch caused by an unknown key id
  /** @type {Map<string, number>} revoked session id → ms first seen */
  revoked: new Map(),
  revokedAt: 0, // ms of the last /api/edge/revoked read
  needSnapshot: true,
  snapshotEtag: null, // the ETag of the snapshot loaded last, and its revision
  snapshotRevision: null,
  nextSnapshotAt: 0, // ms: snapshot fetches are spaced (back-off after failures)
  snapshotBackoff: 500,
  validity: 300, // seconds a signed snapshot was valid for when it came (polling renews by refetch)
  follower: { generation: 0, beat: 0, mode: "stopped", connectedAt: 0 },
  stats: { loads: 0, lastLoadMs: null, lastLoadBytes: null, deltas: 0, renewals: 0, rejected: 0, keyRefreshes: 0, restarts: 0, lastError: null, lastErrorAt: 0 },
};

const nowS = () => Math.floor(Date.now() / 1000);

/** True when the engine holds state it may decide on. */
function valid() {
  const e = state.engine;
  if (e === null) return false;
  const exp = e.expiresAt;
  return exp === null || nowS() <= exp;
}

function noteError(where, err) {
  const code = err && typeof err === "object" && "code" in err ? `${err.code}: ` : "";
  state.stats.lastError = `${where}: ${code}${err && err.message ? err.message : String(err)}`;
  state.stats.lastErrorAt = Date.now();
}

function pruneRevoked() {
  const cutoff = Date.now() - REVOKED_KEEP_MS;
  for (const [sid, at] of state.revoked) {
    if (at >= cutoff) break; // insertion order is time order
    state.revoked.delete(sid);
  }
}

function addRevoked(sessions) {
  if (!Array.isArray(sessions)) return;
  const t = Date.now();
  for (const sid of sessions) if (typeof sid === "string" && !state.revoked.has(sid)) state.revoked.set(sid, t);
  pruneRevoked();
}

// ---- origin control plane -------------------------------------------------------------------

function originUrl(env, path) {
  return new URL(path, String(env.ORIGIN).replace(/\/?$/, "/")).toString();
}

/**
 * A control-plane request to the origin with the edge credential. The timeout covers the headers;
 * `ctl` lets the caller abort later (the event stream).
 */
async function originFetch(env, path, { headers = {}, timeoutMs = FETCH_TIMEOUT_MS, ctl = new AbortController() } = {}) {
  const timer = setTimeout(() => ctl.abort(new Error(`${path}: no answer in ${timeoutMs} ms`)), timeoutMs);
  try {
    return await fetch(originUrl(env, path), { headers: { authorization: `Bearer ${env.EDGE_TOKEN}`, ...headers }, signal: ctl.signal });
  } finally {
    clearTimeout(timer);
  }
}

/** A control-plane request read whole, the timeout covering the body: `{status, etag, text}`. */
async function originText(env, path, { headers = {}, timeoutMs = FETCH_TIMEOUT_MS } = {}) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new Error(`${path}: not read in ${timeoutMs} ms`)), timeoutMs);
  try {
    const res = await fetch(originUrl(env, path), { headers: { authorization: `Bearer ${env.EDGE_TOKEN}`, ...headers }, signal: ctl.signal });
    return { status: res.status, etag: res.headers.get("etag"), text: await res.text() };
  } finally {
    clearTimeout(timer);
  }
}

function expectOk(r, what) {
  if (r.status !== 200) throw new Error(`${what}: HTTP ${r.status} ${r.text.slice(0, 200)}`);
  return r;
}

/** Fetches `/.well-known/fleetgate-keys` into the key set. */
async function refreshKeys(env) {
  const doc = JSON.parse(expectOk(await originText(env, "/.well-known/fleetgate-keys"), "key set").text);
  if (!doc || !Array.isArray(doc.keys)) throw new Error("key set: no `keys` array");
  const keys = {};
  for (const k of doc.keys) if (k && typeof k.keyId === "string" && typeof k.publicKey === "string") keys[k.keyId] = k.publicKey;
  state.keys = keys;
  state.keysAt = Date.now();
  state.stats.keyRefreshes++;
}

/** Runs `f(keys)`; on UNKNOWN_KEY refreshes the key set once and runs it again. */
async function withKeys(env, f) {
  if (state.keys === null) await refreshKeys(env);
  try {
    return f(state.keys);
  } catch (err) {
    if (err?.code !== "UNKNOWN_KEY") throw err;
    await refreshKeys(env);
    return f(state.keys);
  }
}

function swapEngine(next) {
  const old = state.engine;
  state.engine = next;
  state.revision = next.revision;
  if (old !== null && old !== next) old.free();
}

/** Loads `/api/edge/snapshot`. A bad envelope leaves the last good state in place. */
async function loadSnapshot(env, { force = false } = {}) {
  const headers = {};
  if (!force && state.snapshotEtag && valid() && state.snapshotRevision === state.engine.revision) {
    headers["if-none-match"] = state.snapshotEtag;
  }
  const started = Date.now();
  // The first time, the recently revoked sessions come with the snapshot: no window in which a
  // revoked session's token would pass.
  const [r, revoked] = await Promise.all([
    originText(env, "/api/edge/snapshot", { headers, timeoutMs: SNAPSHOT_TIMEOUT_MS }),
    state.revokedAt === 0 ? originText(env, "/api/edge/revoked") : null,
  ]);
  if (revoked !== null) takeRevoked(expectOk(revoked, "revoked sessions").text);
  if (r.status === 304) {
    state.needSnapshot = false;
    return;
  }
  const text = expectOk(r, "snapshot").text;
  const etag = r.etag;
  let next;
  try {
    next = await withKeys(env, (keys) =>
      PolicyEngine.fromSigned(text, keys, state.revision === null ? { now: nowS() } : { now: nowS(), minRevision: state.revision }),
    );
  } catch (err) {
    state.stats.rejected++;
    throw err;
  }
  swapEngine(next);
  if (typeof next.expiresAt === "number") state.validity = Math.max(1, next.expiresAt - nowS());
  state.snapshotEtag = etag;
  state.snapshotRevision = next.revision;
  state.needSnapshot = false;
  state.stats.loads++;
  state.stats.lastLoadMs = Date.now() - started; // fetch + verify + index, by the runtime's clock
  state.stats.lastLoadBytes = text.length;
}

/** from/to of an envelope's delta payload (read before verification only to route it). */
function deltaRange(text) {
  try {
    const env = JSON.parse(text);
    const b64 = String(env.payload).replace(/-/g, "+").replace(/_/g, "/");
    const d = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))));
    return { from: d.from, to: d.to };
  } catch {
    return { from: undefined, to: undefined };
  }
}

/**
 * Applies one signed delta envelope. A stale one (already covered) is ignored; one that does not
 * follow the current revision asks for the snapshot; a bad one is never applied (the engine is
 * atomic) and asks for the snapshot too.
 */
async function applyEnvelope(env, text) {
  if (state.engine === null || state.needSnapshot) return;
  try {
    await withKeys(env, (keys) => state.engine.applySignedDelta(text, keys, { now: nowS() }));
  } catch (err) {
    const { to } = deltaRange(text);
    // Already covered (a repeat, or a renewal of an older revision): nothing to do.
    if (err?.code === "REVISION_MISMATCH" && Number.isSafeInteger(to) && to <= state.engine.revision) return;
    state.stats.rejected++;
    state.needSnapshot = true;
    noteError("delta", err);
    return;
  }
  const { from, to } = deltaRange(text);
  if (from === to) state.stats.renewals++;
  else state.stats.deltas++;
  state.revision = state.engine.revision;
}

/** One poll of `/api/edge/deltas?since=` (200 envelope, 204 current, 410 too old). */
async function pollDeltas(env) {
  const r = await originText(env, `/api/edge/deltas?since=${state.engine.revision}`);
  if (r.status === 204) return;
  if (r.status === 410) {
    state.needSnapshot = true;
    return;
  }
  await applyEnvelope(env, expectOk(r, "deltas").text);
}

function takeRevoked(text) {
  addRevoked(JSON.parse(text)?.sessions);
  state.revokedAt = Date.now();
}

async function pollRevoked(env) {
  takeRevoked(expectOk(await originText(env, "/api/edge/revoked"), "revoked sessions").text);
}

// ---- the follower -----------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function alive(gen) {
  if (state.follower.generation !== gen) return false;
  state.follower.beat = Date.now();
  return true;
}

/**
 * One attempt to (re)load the snapshot, unless the last one was too recent: attempts are at least
 * RETRY_MIN_MS apart, and back off (doubling up to RETRY_MAX_MS) while they fail. True when the
 * state is good.
 */
async function resync(env) {
  if (Date.now() < state.nextSnapshotAt) return false;
  try {
    if (state.keys === null) await refreshKeys(env);
    await loadSnapshot(env, { force: state.engine !== null && !valid() });
    state.snapshotBackoff = RETRY_MIN_MS;
    state.nextSnapshotAt = Date.now() + RETRY_MIN_MS;
    return true;
  } catch (err) {
    noteError("snapshot", err);
    state.nextSnapshotAt = Date.now() + state.snapshotBackoff;
    state.snapshotBackoff = Math.min(state.snapshotBackoff * 2, RETRY_MAX_MS);
    return false;
  }
}

const needsSnapshot = () => state.needSnapshot || state.engine === null || !valid();

/** Waits until the state is loaded (keys, snapshot). */
async function settle(env, gen) {
  while (alive(gen) && needsSnapshot()) {
    if (!(await resync(env))) await napping(gen, Math.max(state.nextSnapshotAt - Date.now(), 50));
  }
}

/** Sleeps `ms` in beats so the follower keeps proving it is alive. */
async function napping(gen, ms) {
  const end = Date.now() + ms;
  while (alive(gen) && Date.now() < end) await sleep(Math.min(BEAT_MS, end - Date.now()));
}

/** Parses server-sent events from a byte stream; calls `onEvent(name, data, id)`. */
function sseParser(onEvent) {
  const decoder = new TextDecoder();
  let buf = "";
  let name = "";
  let data = [];
  let id = "";
  return async (chunk) => {
    buf += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (data.length > 0) await onEvent(name || "message", data.join("\n"), id);
        name = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
  };
}

/** Follows `/api/edge/events` until it ends, errors or stalls (throws), or a resync is due (returns). */
async function followEvents(env, gen) {
  const ctl = new AbortController();
  // Last-Event-ID: the server starts the stream with what we missed since our revision.
  const headers = { accept: "text/event-stream" };
  if (state.engine !== null) headers["last-event-id"] = String(state.engine.revision);
  const res = await originFetch(env, "/api/edge/events", { headers, ctl });
  if (res.status !== 200) {
    const body = await res.text().catch(() => "");
    throw new Error(`events: HTTP ${res.status} ${body.slice(0, 200)}`);
  }
  if (!res.body) throw new Error("events: no body");
  const reader = res.body.getReader();
  try {
    state.follower.mode = "events";
    state.follower.connectedAt = Date.now();
    const onEvent = sseParser(async (name, data) => {
      if (name === "delta") await applyEnvelope(env, data);
      else if (name === "resync") state.needSnapshot = true; // the change log no longer reaches our revision
      else if (name === "revoked") {
        try {
          addRevoked(JSON.parse(data)?.sessions);
        } catch (err) {
          noteError("revoked event", err);
        }
      }
    });
    // What happened between the snapshot and this connection: catch up once the stream is open.
    await pollRevoked(env);
    await pollDeltas(env);
    let lastByte = Date.now();
    let pending = reader.read();
    while (alive(gen)) {
      // A rejected or out-of-order delta asks for the snapshot: fetch it with the stream kept open.
      if (needsSnapshot() && !(await resync(env)) && state.engine === null) return;
      let timer;
      const tick = new Promise((resolve) => (timer = setTimeout(() => resolve(null), BEAT_MS)));
      const got = await Promise.race([pending, tick]);
      clearTimeout(timer);
      if (got === null) {
        if (Date.now() - lastByte > STREAM_IDLE_MS) throw new Error("events: stream idle");
        continue;
      }
      if (got.done) throw new Error("events: stream ended");
      lastByte = Date.now();
      pending = reader.read();
      await onEvent(got.value);
    }
  } finally {
    reader.cancel().catch(() => {});
    ctl.abort();
  }
}

/** Polls deltas and revoked sessions for `ms`. */
async function pollFor(env, gen, ms) {
  state.follower.mode = "polling";
  const end = Date.now() + ms;
  while (alive(gen) && Date.now() < end) {
    const started = Date.now();
    try {
      if (needsSnapshot() && !(await resync(env))) {
        await napping(gen, POLL_MS);
        continue;
      }
      await pollDeltas(env);
      await pollRevoked(env);
      // Polling gets no renewals: refetch the snapshot before it expires (a third of its validity
      // ahead, at most RENEW_MARGIN_S).
      const exp = state.engine?.expiresAt;
      const margin = Math.max(1, Math.min(RENEW_MARGIN_S, state.validity / 3));
      if (typeof exp === "number" && exp - nowS() < margin && Date.now() >= state.nextSnapshotAt) {
        state.nextSnapshotAt = Date.now() + RETRY_MIN_MS;
        await loadSnapshot(env, { force: true });
      }
    } catch (err) {
      noteError("poll", err);
    }
    await napping(gen, POLL_MS - (Date.now() - started));
  }
}

/** The follower's life: load, follow the events, poll when they drop, repeat. */
async function follow(env, gen) {
  // Beat while awaiting long fetches too (a 10 MB snapshot from a slow origin); timers stop with
  // the request context that runs us, so a follower whose context ended stops beating.
  const beat = setInterval(() => alive(gen), BEAT_MS);
  try {
    await followLoop(env, gen);
  } finally {
    clearInterval(beat);
  }
}

async function followLoop(env, gen) {
  while (alive(gen)) {
    await settle(env, gen);
    if (!alive(gen)) break;
    try {
      await followEvents(env, gen);
      continue;
    } catch (err) {
      noteError("events", err);
    }
    await pollFor(env, gen, EVENTS_RETRY_MS);
  }
}

/** Starts the follower in this request's context when none is alive. */
function ensureFollower(env, ctx) {
  const f = state.follower;
  if (f.generation !== 0 && Date.now() - f.beat < STALL_MS) return;
  if (f.generation !== 0) state.stats.restarts++;
  const gen = f.generation + 1;
  state.follower = { generation: gen, beat: Date.now(), mode: "starting", connectedAt: 0 };
  const run = follow(env, gen).catch((err) => noteError("follower", err));
  if (ctx && typeof ctx.waitUntil === "function") ctx.waitUntil(run);
}

// ---- answers ------------------------------------------------------------------------------------

const JSON_TYPE = "application/json";

const currentRevision = () => (state.engine === null ? "none" : String(state.engine.revision));

/** The answer with the edge's headers; `revision` is the one decided on (taken before forwarding). */
function tagged(res, tag, revision = currentRevision()) {
  const out = new Response(res.body, res);
  out.headers.set("x-fleetgate-edge", tag);
  out.headers.set("x-fleetgate-revision", revision);
  return out;
}

function jsonAnswer(status, body, tag, extra = {}) {
  return tagged(new Response(JSON.stringify(body), { status, headers: { "content-type": JSON_TYPE, ...extra } }), tag);
}

const errorAnswer = (status, code, message, tag, extra) => jsonAnswer(status, { error: { code, message } }, tag, extra);

/** Forwards the request to the origin unchanged; 502 ORIGIN_UNAVAILABLE when it cannot be reached. */
async function forward(request, env, tag) {
  const revision = currentRevision();
  const url = new URL(request.url);
  const target = new URL(url.pathname + url.search, String(env.ORIGIN).replace(/\/?$/, "/"));
  let res;
  try {
    res = await fetch(new Request(target, request), { redirect: "manual" });
  } catch (err) {
    const body = JSON.stringify({ error: { code: "ORIGIN_UNAVAILABLE", message: `the origin could not be reached: ${err?.message ?? err}` } });
    return tagged(new Response(body, { status: 502, headers: { "content-type": JSON_TYPE } }), tag, revision);
  }
  return tagged(res, tag, revision);
}

/**
 * The caller's credential, read as the server reads it (`Authorization: Bearer <token>`, else the
 * `fleetgate_session` cookie): `{kind: "none" | "jwt" | "opaque" | "garbage", token}`. An opaque
 * token (a session token) cannot be checked here.
 */
function bearerOf(request) {
  const h = request.headers.get("authorization");
  if (h === null) {
    const cookie = request.headers.get("cookie") ?? "";
    return /(?:^|;)\s*fleetgate_session=/.test(cookie) ? { kind: "opaque", token: null } : { kind: "none", token: null };
  }
  if (!h.startsWith("Bearer ")) return { kind: "garbage", token: null };
  const token = h.slice(7).trim();
  if (token === "") return { kind: "none", token: null };
  if (token.length > MAX_TOKEN_BYTES) return { kind: "garbage", token: null };
  if (JWT_SHAPE.test(token)) return { kind: "jwt", token };
  return OPAQUE_TOKEN.test(token) ? { kind: "opaque", token } : { kind: "garbage", token: null };
}

/**
 * Access tokens whose signature verified, with their claims: a client sends many requests with one
 * token, and an Ed25519 verification costs far more than the decision. Expiry and the session's
 * revocation are checked on every request; a token stays valid as long as it is unexpired (its
 * key stays published for longer than any token it signed lives).
 */
const verified = new Map();
const VERIFIED_MAX = 10000;

function remember(token, claims) {
  if (verified.size >= VERIFIED_MAX) verified.delete(verified.keys().next().value);
  verified.set(token, { user: claims.user, session: claims.session, expiresAt: claims.expiresAt });
}

/** The `iat` claim of a JWT, unverified (only to decide whether a key-set refresh can help). */
function unverifiedIat(token) {
  try {
    const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const iat = JSON.parse(atob(b64)).iat;
    return Number.isFinite(iat) ? iat : null;
  } catch {
    return null;
  }
}

/**
 * Verifies an access token: `{ok: true, user, session}` or `{ok: false, message}`.
 *
 * An unknown key id refreshes the key set once before the token is refused — unless the key set
 * was fetched after the token was issued (the server publishes a key before it signs with it, so
 * a newer set would hold it). Refreshes caused by tokens happen at most once a second; a token
 * that meets that limit gets `{ok: false, unsure: true}` and is forwarded, not refused.
 */
async function verify(env, token) {
  const check = () => {
    const now = nowS();
    let claims = verified.get(token);
    if (claims === undefined || now > claims.expiresAt) {
      verified.delete(token);
      claims = PolicyEngine.verifyToken(token, state.keys ?? {}, { now });
      remember(token, claims);
    }
    if (state.revoked.has(claims.session)) return { ok: false, message: "the session of this access token has ended" };
    return { ok: true, user: claims.user, session: claims.session };
  };
  try {
    return check();
  } catch (err) {
    if (err?.code !== "UNKNOWN_KEY") return { ok: false, message: tokenMessage(err) };
  }
  const iat = unverifiedIat(token);
  if (iat !== null && state.keysAt > (iat + 1) * 1000) return { ok: false, message: tokenMessage({ code: "UNKNOWN_KEY" }) };
  if (Date.now() - state.keyRefreshAt < KEY_REFRESH_MIN_MS) return { ok: false, unsure: true };
  state.keyRefreshAt = Date.now();
  try {
    await refreshKeys(env);
  } catch (err) {
    noteError("key set", err);
    return { ok: false, unsure: true };
  }
  try {
    return check();
  } catch (err) {
    return { ok: false, message: tokenMessage(err) };
  }
}

function tokenMessage(err) {
  switch (err?.code) {
    case "EXPIRED":
      return "the access token has expired";
    case "UNKNOWN_KEY":
      return "the access token is signed by an unknown key";
    case "BAD_SIGNATURE":
      return "the access token's signature does not verify";
    case "BAD_TOKEN":
      return `malformed access token: ${err.message}`;
    default:
      return `invalid access token: ${err?.message ?? err}`;
  }
}

/** `POST /api/devices/{id}/commands`: decided here, forwarded only when allowed. */
async function gateCommand(request, env, rawId) {
  if (!valid()) return forward(request, env, "bypass");
  let device;
  try {
    device = decodeURIComponent(rawId);
  } catch {
    return forward(request, env, "forwarded");
  }
  const bearer = bearerOf(request);
  if (bearer.kind === "opaque") return forward(request, env, "forwarded"); // a session token: the server checks it
  if (bearer.kind === "none") return errorAnswer(401, "UNAUTHENTICATED", "missing bearer token", "denied");
  if (bearer.kind === "garbage") return errorAnswer(401, "UNAUTHENTICATED", "malformed bearer token", "denied");
  const who = await verify(env, bearer.token);
  if (!who.ok) {
    if (who.unsure) return forward(request, env, "forwarded");
    return errorAnswer(401, "UNAUTHENTICATED", who.message, "denied");
  }
  if (!valid()) return forward(request, env, "bypass"); // it may have expired while the keys loaded
  const decision = state.engine.explain(who.user, device, "control");
  if (!decision.allowed) return errorAnswer(403, decision.code, `denied: ${decision.code}`, "denied");
  return forward(request, env, "allowed");
}

/** `GET /api/devices`: the server's answer, computed here (only when it is sure to be the same). */
async function answerDevices(request, env, url) {
  if (!valid()) return forward(request, env, "bypass");
  const bearer = bearerOf(request);
  if (bearer.kind !== "jwt") return forward(request, env, "forwarded");
  const who = await verify(env, bearer.token);
  // Refusals are the server's to word: it answers 401 in its own terms.
  if (!who.ok) return forward(request, env, "forwarded");
  if (!valid()) return forward(request, env, "bypass");
  const seen = new Map();
  for (const [k, v] of url.searchParams) {
    if (k !== "action" && k !== "activeOrg") continue;
    if (seen.has(k)) return forward(request, env, "forwarded"); // the server's duplicate-field error
    seen.set(k, v);
  }
  const action = seen.get("action");
  if (action !== undefined && action !== "view" && action !== "control") {
    // The server names at most 64 characters of it.
    return errorAnswer(400, "INVALID_ARGUMENT", `unknown action \`${[...action].slice(0, 64).join("")}\``, "answered");
  }
  const activeOrg = seen.get("activeOrg") || undefined;
  let list;
  try {
    list = state.engine.visibleDevices(who.user, { action: action ?? "view", activeOrg });
  } catch (err) {
    if (err?.code === "NOT_SWITCHABLE") return errorAnswer(403, "NOT_SWITCHABLE", err.message, "answered");
    noteError("visibleDevices", err);
    return forward(request, env, "forwarded");
  }
  return tagged(new Response(JSON.stringify(list), { status: 200, headers: { "content-type": JSON_TYPE } }), "answered");
}

function status() {
  const e = state.engine;
  const s = e === null ? (state.stats.lastError ? "unavailable" : "starting") : valid() ? "ready" : "expired";
  return {
    state: s,
    revision: e === null ? null : e.revision,
    expiresAt: e === null ? null : e.expiresAt,
    keyIds: Object.keys(state.keys ?? {}).sort(),
    follower: state.follower.mode,
    syncing: needsSnapshot(),
    revokedSessions: state.revoked.size,
    stats: { ...state.stats },
  };
}

function headerBytes(request) {
  let n = 0;
  for (const [k, v] of request.headers) n += k.length + v.length + 4;
  return n;
}

async function route(request, env, ctx) {
  ensureFollower(env, ctx);
  const url = new URL(request.url);
  if (headerBytes(request) > MAX_HEADER_BYTES) {
    return errorAnswer(431, "HEADERS_TOO_LARGE", `request headers over ${MAX_HEADER_BYTES} bytes`, "denied", { connection: "close" });
  }
  if (url.pathname === STATUS_PATH) {
    if (request.method !== "GET" && request.method !== "HEAD") {
      return errorAnswer(405, "METHOD_NOT_ALLOWED", "the status route answers GET only", "answered", { allow: "GET, HEAD" });
    }
    return jsonAnswer(200, status(), "answered", { "cache-control": "no-store" });
  }
  const m = COMMANDS_PATH.exec(url.pathname);
  if (m && request.method === "POST") return gateCommand(request, env, m[1]);
  if (url.pathname === "/api/devices" && request.method === "GET") return answerDevices(request, env, url);
  return forward(request, env, valid() ? "forwarded" : "bypass");
}

export default {
  async fetch(request, env, ctx) {
    if (!env.ORIGIN || !env.EDGE_TOKEN) {
      return errorAnswer(500, "EDGE_MISCONFIGURED", "the ORIGIN and EDGE_TOKEN bindings must be set", "bypass");
    }
    try {
      return await route(request, env, ctx);
    } catch (err) {
      noteError("request", err);
      // The edge failed to decide: the server is the authority, let it answer.
      try {
        return await forward(request, env, "bypass");
      } catch (err2) {
        noteError("forward", err2);
        return errorAnswer(500, "EDGE_INTERNAL", "the edge failed to handle this request", "bypass");
      }
    }
  },
};
