// An origin stub for the edge suites: a Node HTTP server that plays fleetgate-server's edge side
// (SPEC §7.1) with keys it generates itself, and lets a test misbehave on purpose (tampered,
// rolled-back, expired or unknown-key envelopes; dropped streams; revoked sessions). Every other
// request is recorded and answered 202 with what it received, so a test can see what was forwarded.
import { createServer } from "node:http";
import { SigningKey, nowS } from "./harness.mjs";

export class StubOrigin {
  constructor({ snapshot, edgeToken, validity = 300 }) {
    this.edgeToken = edgeToken;
    this.validity = validity;
    this.world = structuredClone(snapshot);
    this.key = new SigningKey("k1");
    this.published = [this.key];
    this.log = []; // deltas, in order: {from, to, ops}
    this.revoked = [];
    this.streams = new Set();
    this.eventsOpen = true; // false: /api/edge/events answers 503
    this.snapshotOverride = null; // () => {status, body} to misbehave on /api/edge/snapshot
    this.counts = { keys: 0, snapshot: 0, deltas: 0, revoked: 0, events: 0 };
    this.forwarded = [];
  }

  get revision() {
    return this.world.revision;
  }

  /** The signed full snapshot, as the server would send it now. */
  snapshotEnvelope({ key = this.key, revision = this.world.revision, expiresAt = nowS() + this.validity, world = this.world } = {}) {
    return key.envelope({ ...world, revision, issuedAt: nowS(), expiresAt });
  }

  deltaEnvelope(delta, { key = this.key, expiresAt = nowS() + this.validity } = {}) {
    return key.envelope({ format: "fleetgate/delta@1", ...delta, issuedAt: nowS(), expiresAt });
  }

  /** Commits a change: applies the ops to the stub's world, logs it, pushes it to the streams. */
  commit(ops, { push = true, key = this.key } = {}) {
    const from = this.world.revision;
    const to = from + 1;
    for (const op of ops) applyOp(this.world, op);
    this.world.revision = to;
    const delta = { from, to, ops };
    this.log.push(delta);
    if (push) this.pushDelta(this.deltaEnvelope(delta, { key }), to);
    return delta;
  }

  pushDelta(envelope, id) {
    this.push(`event: delta\nid: ${id}\ndata: ${JSON.stringify(envelope)}\n\n`);
  }

  /** A signed renewal of the current revision. */
  renew({ key = this.key, expiresAt } = {}) {
    const r = this.world.revision;
    this.pushDelta(this.deltaEnvelope({ from: r, to: r, ops: [] }, { key, expiresAt }), r);
  }

  revoke(sessions) {
    this.revoked.push(...sessions);
    this.push(`event: revoked\ndata: ${JSON.stringify({ sessions })}\n\n`);
  }

  push(text) {
    for (const res of this.streams) res.write(text);
  }

  dropStreams() {
    for (const res of this.streams) res.destroy();
    this.streams.clear();
  }

  /** Starts a new active key; the old one stays published. */
  rotate(keyId) {
    this.key = new SigningKey(keyId);
    this.published.push(this.key);
    return this.key;
  }

  listen() {
    this.server = createServer((req, res) => this.handle(req, res).catch((err) => {
      res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { code: "STUB", message: String(err) } }));
    }));
    return new Promise((resolve) => this.server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${this.server.address().port}`)));
  }

  close() {
    this.dropStreams();
    this.server.closeAllConnections?.();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  async handle(req, res) {
    const url = new URL(req.url, "http://stub");
    const json = (status, body, headers = {}) => {
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(body === undefined ? undefined : JSON.stringify(body));
    };
    if (url.pathname === "/.well-known/fleetgate-keys") {
      this.counts.keys++;
      return json(200, { keys: this.published.map((k) => ({ keyId: k.keyId, publicKey: k.publicKey, active: k === this.key })) });
    }
    if (url.pathname.startsWith("/api/edge/")) {
      if (req.headers.authorization !== `Bearer ${this.edgeToken}`) return json(401, { error: { code: "UNAUTHENTICATED", message: "edge token" } });
      switch (url.pathname) {
        case "/api/edge/snapshot": {
          this.counts.snapshot++;
          if (this.snapshotOverride) {
            const o = this.snapshotOverride();
            return json(o.status ?? 200, o.body);
          }
          const etag = `"${this.world.revision}"`;
          if (req.headers["if-none-match"] === etag) return json(304, undefined, { etag });
          return json(200, this.snapshotEnvelope(), { etag });
        }
        case "/api/edge/deltas": {
          this.counts.deltas++;
          const since = Number(url.searchParams.get("since"));
          if (since === this.world.revision) {
            res.writeHead(204);
            return res.end();
          }
          const i = this.log.findIndex((d) => d.from === since);
          if (i < 0) return json(410, { error: { code: "GONE", message: "too old" } });
          const ops = this.log.slice(i).flatMap((d) => d.ops);
          return json(200, this.deltaEnvelope({ from: since, to: this.world.revision, ops }));
        }
        case "/api/edge/revoked":
          this.counts.revoked++;
          return json(200, { sessions: this.revoked });
        case "/api/edge/events":
          this.counts.events++;
          if (!this.eventsOpen) return json(503, { error: { code: "UNAVAILABLE", message: "no stream now" } });
          res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
          res.write(": hello\n\n");
          this.streams.add(res);
          req.on("close", () => this.streams.delete(res));
          return;
        default:
          return json(404, { error: { code: "NOT_FOUND", message: url.pathname } });
      }
    }
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const seen = { method: req.method, path: req.url, headers: req.headers, body: Buffer.concat(chunks).toString("utf8") };
    this.forwarded.push(seen);
    return json(202, { stub: true, ...seen });
  }
}

const byId = (list, id) => list.findIndex((x) => x.id === id);

/** Applies one delta op (§4.2) to a plain snapshot object. */
export function applyOp(world, op) {
  const put = (list, item, same) => {
    const i = world[list].findIndex(same);
    if (i >= 0) world[list][i] = item;
    else world[list].push(item);
  };
  const drop = (list, i) => {
    if (i < 0) throw new Error(`stub: nothing to remove for ${JSON.stringify(op)}`);
    world[list].splice(i, 1);
  };
  switch (op.op) {
    case "putOrg":
      return put("orgs", op.org, (x) => x.id === op.org.id);
    case "putUser":
      return put("users", op.user, (x) => x.id === op.user.id);
    case "putDevice":
      return put("devices", op.device, (x) => x.id === op.device.id);
    case "putMembership":
      return put("memberships", op.membership, (x) => x.user === op.membership.user && x.org === op.membership.org);
    case "removeOrg":
      return drop("orgs", byId(world.orgs, op.id));
    case "removeUser":
      return drop("users", byId(world.users, op.id));
    case "removeDevice":
      return drop("devices", byId(world.devices, op.id));
    case "removeMembership":
      return drop("memberships", world.memberships.findIndex((m) => m.user === op.user && m.org === op.org));
    default:
      throw new Error(`stub: unknown op ${op.op}`);
  }
}
