//! The server's shared state and its one write path.
//!
//! **Readers never wait for work.** The engine is published as an `Arc<Engine>`; a request
//! clones the `Arc` (a lock held for nanoseconds) and does its work — projections, lists,
//! catch-up — on that immutable version, however long it takes, without blocking anyone.
//!
//! **One writer.** Commits are serialized by the writer lock. A commit decides on the published
//! version, applies the delta to a private next version (the previous version, caught up by the
//! few deltas it missed, or a clone when a reader still holds it), persists delta, inverse,
//! audit entry and effects in one transaction, and only then publishes the next version. If the
//! engine refuses the delta nothing is stored; if the store fails nothing is published: the
//! engine and the database never split.
//!
//! **Many replicas** (PostgreSQL, SPEC §9): the store's write transaction serializes writers
//! of every process, so a commit first catches the published engine up with the changes other
//! replicas committed (read inside that transaction), then decides on exactly the state it
//! commits onto. Changes committed elsewhere arrive by `LISTEN/NOTIFY` (`replica.rs`) and are
//! applied by [`App::catch_up`] under the writer lock, in revision order, each fanned out to
//! this replica's streams like a local commit: no gap, no duplicate. Sessions live in the
//! store; this process caches the live ones it has seen and forgets those ended anywhere.
//!
//! **Lock order** (a lock is only ever taken while holding the ones before it):
//! `writer` → the store's write transaction → `world` → `subs`; `sessions` and `keys` are
//! leaves held for map operations only.
//! `world`, `subs`, `sessions` and `keys` are never held across I/O, hashing or an `.await`;
//! `writer` is taken only on blocking threads.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::response::sse::Event;
use fleetgate::authority::claim_codes_voided_by;
use fleetgate::project::projected_delta;
use fleetgate::signed::Envelope;
use fleetgate::{Delta, Engine};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::store::{now, Acceptance, AuditRow, Db, Effects, KeyRow, Retention, SessionRow};
use crate::throttle::{Throttle, LOGIN};

/// Settings of a running server (flags of `fleetgate-server`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Demo mode: invitation links in the outbox, demo logins shown.
    pub demo: bool,
    /// How long a session lasts, seconds.
    pub session_seconds: i64,
    /// Validity of signed snapshots and deltas, seconds.
    pub signed_seconds: i64,
    /// How often edge streams get a signed renewal, seconds.
    pub renew_seconds: u64,
    /// Lifetime of access tokens, seconds (at most 300).
    pub token_seconds: i64,
    /// How long an invitation stays valid, seconds.
    pub invite_seconds: i64,
    /// The retention policy.
    pub retention: Retention,
    /// Hashes (SHA-256) of the edge credentials.
    pub edge_tokens: HashSet<String>,
    /// Proxies (e.g. edge gateways) whose `X-Forwarded-For` names the client for throttling.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Config {
    /// How long a retired key stays published: the longest validity of what it signed
    /// (signed snapshots and deltas, access tokens).
    pub fn key_keep_seconds(&self) -> i64 {
        self.signed_seconds.max(self.token_seconds)
    }
}

/// A live session, as the authentication path sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub user: String,
    pub expires_at: i64,
}

/// The live sessions, by token hash and by id. Authoritative in memory for this process: every
/// session ends through [`App::end_sessions`].
#[derive(Default)]
pub struct Sessions {
    by_token: RwLock<HashMap<String, Arc<Session>>>,
    by_id: RwLock<HashMap<String, String>>,
    /// Bumped by every removal: a session read from the store is cached only if no removal
    /// happened while it was read (else a session ended meanwhile could be cached as live).
    removals: AtomicU64,
}

impl Sessions {
    fn insert(&self, token_hash: String, s: Session) {
        let id = s.id.clone();
        if let Ok(mut m) = self.by_token.write() {
            m.insert(token_hash.clone(), Arc::new(s));
        }
        if let Ok(mut m) = self.by_id.write() {
            m.insert(id, token_hash);
        }
    }

    /// The live session of a token hash.
    pub fn by_token(&self, token_hash: &str) -> Option<Arc<Session>> {
        self.by_token.read().ok()?.get(token_hash).cloned()
    }

    /// The live session of an id.
    pub fn by_id(&self, sid: &str) -> Option<Arc<Session>> {
        let hash = self.by_id.read().ok()?.get(sid).cloned()?;
        self.by_token(&hash)
    }

    fn remove(&self, sids: &[String]) {
        self.removals.fetch_add(1, Ordering::SeqCst);
        let hashes: Vec<String> = match self.by_id.write() {
            Ok(mut m) => sids.iter().filter_map(|s| m.remove(s)).collect(),
            Err(_) => Vec::new(),
        };
        if let Ok(mut m) = self.by_token.write() {
            for h in hashes {
                m.remove(&h);
            }
        }
    }

    fn expired(&self, at: i64) -> Vec<String> {
        self.by_token
            .read()
            .map(|m| m.values().filter(|s| s.expires_at <= at).map(|s| s.id.clone()).collect())
            .unwrap_or_default()
    }

    /// The ids of the cached sessions of `users`.
    fn of_users(&self, users: &[String]) -> Vec<String> {
        self.by_token
            .read()
            .map(|m| m.values().filter(|s| users.contains(&s.user)).map(|s| s.id.clone()).collect())
            .unwrap_or_default()
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.by_token.read().map(|m| m.len()).unwrap_or(0)
    }
}

/// The signing keys: the active one and those whose signatures may still be valid.
#[derive(Debug, Clone)]
pub struct KeySet {
    pub active_id: String,
    pub active_secret: [u8; 32],
    /// `(keyId, publicKey, active)` of every published key.
    pub published: Vec<(String, String, bool)>,
    /// keyId → public key, for verifying access tokens.
    pub verify: BTreeMap<String, String>,
}

impl KeySet {
    fn of(rows: &[KeyRow], keep_seconds: i64, at: i64) -> Option<Self> {
        let active = rows.iter().rev().find(|k| k.retired_at.is_none())?;
        let published: Vec<(String, String, bool)> = rows
            .iter()
            .filter(|k| k.retired_at.is_none_or(|r| r > at - keep_seconds))
            .map(|k| (k.key_id.clone(), Envelope::public_key(&k.secret), k.key_id == active.key_id))
            .collect();
        let verify = published.iter().map(|(id, pk, _)| (id.clone(), pk.clone())).collect();
        Some(Self { active_id: active.key_id.clone(), active_secret: active.secret, published, verify })
    }
}

/// The key id of a secret key: a digest of its public key.
pub fn key_id_of(secret: &[u8; 32]) -> String {
    format!("k-{}", crate::auth::digest(&Envelope::public_key(secret)).get(..12).unwrap_or("0"))
}

/// A user's event stream.
struct UserSub {
    viewer: String,
    session: String,
    /// The revision the stream's first event (its catch-up) reaches: later events only.
    start: u64,
    tx: mpsc::Sender<Event>,
}

#[derive(Default)]
struct Subscribers {
    users: Vec<UserSub>,
    edges: Vec<mpsc::Sender<Event>>,
}

/// How long a replica counts as current after it last reached the store's head, ms.
const CURRENT_MS: i64 = 3_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Previous engine versions kept for reuse: with readers holding the newest one or two, an
/// older one is usually free, so a commit rarely clones the whole engine.
const SPARES: usize = 3;

/// Events a stream may queue before it is dropped as too slow (its client reconnects and
/// catches up with `Last-Event-ID`).
pub const STREAM_QUEUE: usize = 256;

struct Writer {
    /// Previous versions (newest last), to be caught up and reused as the next one.
    spares: Vec<Arc<Engine>>,
    /// The latest deltas, to catch the spare up.
    recent: VecDeque<Delta>,
}

/// Everything the handlers share.
pub struct App {
    pub cfg: Config,
    world: RwLock<Arc<Engine>>,
    writer: Mutex<Writer>,
    /// The store (SQLite, or PostgreSQL shared with other replicas).
    pub db: Db,
    /// Whether this replica is current with the store and may answer (always, on SQLite).
    ready: AtomicBool,
    /// Replicas: until when (Unix ms) this replica counts as current — pushed forward by every
    /// catch-up and commit that reached the store's head; a replica whose store stopped
    /// answering stops being ready within seconds, not at the next TCP timeout.
    current_until: std::sync::atomic::AtomicI64,
    /// Sessions recently forgotten because they ended elsewhere (id → when), so the sweep
    /// that re-reads them tells edges once.
    ended_elsewhere: Mutex<HashMap<String, i64>>,
    pub sessions: Sessions,
    pub logins: Throttle,
    pub claims: Throttle,
    subs: Mutex<Subscribers>,
    keys: RwLock<Arc<KeySet>>,
    /// Bounds work proportional to the fleet (catch-up, full snapshots): at most this many at once.
    pub heavy: tokio::sync::Semaphore,
    /// Where Argon2 runs (bounded threads and queue).
    pub hasher: crate::auth::HashPool,
    pub dummy_hash: String,
}

/// The handle handlers share.
pub type AppState = Arc<App>;

impl App {
    /// Builds the state from an opened store (seeded already) and the configuration.
    pub fn new(db: Db, cfg: Config) -> Result<Self, String> {
        let doc = db.load().map_err(|e| e.message)?;
        let engine = Engine::from_doc(doc).map_err(|e| format!("stored world: {e}"))?;
        let sessions = Sessions::default();
        for s in db.live_sessions(now()).map_err(|e| e.message)? {
            sessions.insert(s.token_hash.clone(), Session { id: s.id, user: s.user, expires_at: s.expires_at });
        }
        let rows = db.keys().map_err(|e| e.message)?;
        let keys = KeySet::of(&rows, cfg.key_keep_seconds(), now())
            .ok_or_else(|| "the store has no active signing key".to_owned())?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            cfg,
            world: RwLock::new(Arc::new(engine)),
            writer: Mutex::new(Writer { spares: Vec::new(), recent: VecDeque::new() }),
            ready: AtomicBool::new(!db.shared()),
            current_until: std::sync::atomic::AtomicI64::new(0),
            ended_elsewhere: Mutex::new(HashMap::new()),
            logins: if db.shared() { Throttle::shared(LOGIN, "login", db.clone()) } else { Throttle::new(LOGIN) },
            claims: if db.shared() { Throttle::shared(LOGIN, "claim", db.clone()) } else { Throttle::new(LOGIN) },
            db,
            sessions,
            subs: Mutex::new(Subscribers::default()),
            keys: RwLock::new(Arc::new(keys)),
            heavy: tokio::sync::Semaphore::new(2),
            hasher: crate::auth::HashPool::new(threads, 64),
            dummy_hash: crate::auth::dummy_hash(),
        })
    }

    /// The published engine version.
    pub fn engine(&self) -> Arc<Engine> {
        match self.world.read() {
            Ok(w) => w.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The current key set.
    pub fn keys(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn writer(&self) -> ApiResult<std::sync::MutexGuard<'_, Writer>> {
        self.writer.lock().map_err(|_| ApiError::Internal("the writer lock was poisoned".into()))
    }

    /// Whether this replica is current with the store (readiness: `/healthz`, and every
    /// `/api` request is refused with 503 until it is).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && (!self.db.shared() || now_ms() < self.current_until.load(Ordering::SeqCst))
    }

    /// Records that the published engine is at the store's head now (replicas).
    pub fn mark_current(&self) {
        self.current_until.store(now_ms() + CURRENT_MS, Ordering::SeqCst);
    }

    /// Marks this replica current or not (the change listener, `replica.rs`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Decides with `decide` on the state the change commits onto and commits the delta it
    /// returns, all under the writer lock and inside the store's serialized write transaction
    /// (blocking: call from a blocking thread). `decide` returns the delta (or `None`: nothing
    /// to commit, e.g. a denial, whose audit row it may return) with the audit row and effects;
    /// the commit fills in the effects the change itself implies.
    pub fn commit_with<T>(
        &self,
        decide: impl FnOnce(&Engine) -> ApiResult<(Option<Delta>, AuditRow, Effects, T)>,
    ) -> ApiResult<T> {
        let mut w = self.writer()?;
        if self.db.shared() {
            // Most of what other replicas committed is applied before the cluster-wide lock is
            // taken (as the listener applies it); inside it only what landed in between.
            self.catch_up_with(&mut w)?;
        }
        let (out, done) = self.db.write(|tx| {
            // Other replicas' changes first: the decision is made on the head it commits onto.
            let head = tx.head()?;
            let rev = self.engine().revision();
            if head != rev {
                match tx.deltas_between(rev, head)? {
                    Some(missed) if head > rev => self.advance(&mut w, missed)?,
                    _ => return Err(ApiError::Internal(format!("replica at {rev}, store at {head}: reload needed"))),
                }
            }
            let cur = self.engine();
            let (delta, audit, mut fx, out) = decide(&cur)?;
            let Some(delta) = delta else {
                tx.audit(&audit)?;
                return Ok((out, None));
            };
            let mut next = take_spare(&mut w, &cur);
            let Some(engine) = Arc::get_mut(&mut next) else {
                return Err(ApiError::Internal("the next engine version is shared".into()));
            };
            if let Err(e) = engine.apply_delta(&delta) {
                w.spares.push(next);
                return Err(e.into());
            }
            fx.end_sessions_of = engine.users_signed_out_by(&delta);
            fx.end_reason = if fx.end_reason.is_empty() { "access ended" } else { fx.end_reason };
            fx.revoke_invites.extend(cur.invitations_revoked_by(&delta));
            fx.void_claims.extend(claim_codes_voided_by(&delta));
            let inverse = cur.inverse_ops(&delta.ops);
            let ended = tx.commit(&delta, &inverse, &audit, &fx)?;
            Ok((out, Some((cur, next, delta, ended, fx.acceptance))))
        })?;
        if self.db.shared() {
            self.mark_current();
        }
        // Committed: publish (had the commit failed, `next` would be dropped unpublished).
        if let Some((cur, next, delta, ended, acceptance)) = done {
            self.publish(&mut w, cur, next, &delta)?;
            if let Some(acc) = acceptance {
                self.remember(&acc);
            }
            self.forget_sessions(&ended);
        }
        Ok(out)
    }

    fn remember(&self, acc: &Acceptance) {
        self.sessions.insert(
            acc.session.token_hash.clone(),
            Session { id: acc.session.id.clone(), user: acc.session.user.clone(), expires_at: acc.session.expires_at },
        );
    }

    /// Publishes `next` (the published `cur` with `delta` applied) and fans the delta out.
    fn publish(&self, w: &mut Writer, cur: Arc<Engine>, next: Arc<Engine>, delta: &Delta) -> ApiResult<()> {
        {
            let mut world = self.world.write().map_err(|_| ApiError::Internal("the world lock was poisoned".into()))?;
            *world = next.clone();
        }
        w.recent.push_back(delta.clone());
        while w.recent.len() > 16 {
            w.recent.pop_front();
        }
        self.fan_out(&cur, &next, delta);
        drop(next);
        w.spares.push(cur);
        if w.spares.len() > SPARES {
            w.spares.remove(0);
        }
        Ok(())
    }

    /// Applies changes committed by other replicas (oldest first) to the published engine,
    /// each published and fanned out in turn; changes it has already are skipped.
    fn advance(&self, w: &mut Writer, deltas: Vec<Delta>) -> ApiResult<()> {
        for delta in deltas {
            let cur = self.engine();
            if delta.to.0 <= cur.revision() {
                continue;
            }
            if delta.from.0 != cur.revision() {
                return Err(ApiError::Internal(format!(
                    "change {}→{} does not follow revision {}",
                    delta.from.0,
                    delta.to.0,
                    cur.revision()
                )));
            }
            let mut next = take_spare(w, &cur);
            let Some(engine) = Arc::get_mut(&mut next) else {
                return Err(ApiError::Internal("the next engine version is shared".into()));
            };
            engine.apply_delta(&delta).map_err(|e| ApiError::Internal(format!("stored change {}: {e}", delta.to.0)))?;
            // Sessions the change ended were ended in the store by the replica that made it;
            // the ones cached here go now (the store's notification may still be on its way).
            let users = engine.users_signed_out_by(&delta);
            self.publish(w, cur, next, &delta)?;
            if !users.is_empty() {
                self.forget_sessions(&self.sessions.of_users(&users));
            }
        }
        Ok(())
    }

    /// Catches the published engine up with the store's head (changes other replicas
    /// committed); returns the revision reached. When the change log no longer reaches back
    /// (or the store went backwards: re-seeded), the world is reloaded and every stream closed
    /// (clients reconnect and catch up). Blocking.
    pub fn catch_up(&self) -> ApiResult<u64> {
        let mut w = self.writer()?;
        self.catch_up_with(&mut w)
    }

    /// [`App::catch_up`] under the writer lock already held.
    fn catch_up_with(&self, w: &mut Writer) -> ApiResult<u64> {
        let head = self.db.revision()?.unwrap_or(0);
        let rev = self.engine().revision();
        if head == rev {
            self.mark_current();
            return Ok(rev);
        }
        let missed = if head > rev { self.db.deltas_between(rev, head)? } else { None };
        match missed {
            Some(missed) => {
                if let Err(e) = self.advance(w, missed) {
                    tracing::warn!("catch-up: {e:?}; reloading the world");
                    self.reload(w)?;
                }
            }
            None => self.reload(w)?,
        }
        self.mark_current();
        Ok(self.engine().revision())
    }

    /// Replaces the published engine by the store's world; closes every stream.
    fn reload(&self, w: &mut Writer) -> ApiResult<()> {
        let doc = self.db.load()?;
        let engine = Engine::from_doc(doc).map_err(|e| ApiError::Internal(format!("stored world: {e}")))?;
        tracing::info!("reloaded the world at revision {}", engine.revision());
        {
            let mut world = self.world.write().map_err(|_| ApiError::Internal("the world lock was poisoned".into()))?;
            *world = Arc::new(engine);
        }
        w.spares.clear();
        w.recent.clear();
        if let Ok(mut s) = self.subs.lock() {
            s.users.clear();
            s.edges.clear();
        }
        Ok(())
    }

    /// A session another replica created, read from the store (blocking), cached when no
    /// session ended while it was read. A store that cannot answer is 503, not 401.
    pub fn load_session(&self, key: &str, by_id: bool) -> ApiResult<Option<Arc<Session>>> {
        let removals = self.sessions.removals.load(Ordering::SeqCst);
        let Some(row) = self.db.live_session(key, by_id, now()).map_err(|e| {
            tracing::warn!("session lookup: {e}");
            ApiError::NotReady
        })?
        else {
            return Ok(None);
        };
        let s = Session { id: row.id, user: row.user, expires_at: row.expires_at };
        if self.sessions.removals.load(Ordering::SeqCst) == removals {
            self.sessions.insert(row.token_hash, s.clone());
        }
        Ok(Some(Arc::new(s)))
    }

    /// Forgets sessions ended elsewhere (another replica's logout, from its notification or
    /// the store's list of ended sessions).
    pub fn sessions_ended_elsewhere(&self, sids: &[String]) {
        let t = now();
        let fresh: Vec<String> = match self.ended_elsewhere.lock() {
            Ok(mut seen) => {
                seen.retain(|_, at| *at > t - 60);
                sids.iter().filter(|s| seen.insert((*s).clone(), t).is_none()).cloned().collect()
            }
            Err(_) => sids.to_vec(),
        };
        // Cached or not: its streams here close and this replica's edges are told.
        self.forget_sessions(&fresh);
    }

    /// Sends each user stream its projected delta and each edge stream the signed full delta.
    fn fan_out(&self, before: &Engine, after: &Engine, delta: &Delta) {
        let viewers: Vec<String> = match self.subs.lock() {
            Ok(mut s) => {
                s.users.retain(|x| !x.tx.is_closed());
                s.edges.retain(|x| !x.is_closed());
                let mut v: Vec<String> = s.users.iter().map(|x| x.viewer.clone()).collect();
                v.sort();
                v.dedup();
                v
            }
            Err(_) => return,
        };
        let to = delta.to.0;
        let events: HashMap<String, Event> = viewers
            .into_iter()
            .map(|v| {
                let probe = before.probe(delta, &v);
                let b = before.projection_part(&v, &probe);
                let a = after.projection_part(&v, &probe);
                let pd = projected_delta(&b, &a, delta.from.0, to);
                (v, Event::default().id(to.to_string()).event("delta").data(pd.to_json()))
            })
            .collect();
        let edge = self.sign_delta(delta).map(|env| Event::default().id(to.to_string()).event("delta").data(env));
        if let Ok(mut s) = self.subs.lock() {
            s.users.retain(|x| {
                if x.start >= to {
                    return true;
                }
                match events.get(&x.viewer) {
                    Some(ev) => x.tx.try_send(ev.clone()).is_ok(),
                    None => true,
                }
            });
            if let Some(ev) = edge {
                s.edges.retain(|x| x.try_send(ev.clone()).is_ok());
            }
        }
    }

    /// A delta as a signed envelope (SPEC §4.4), valid for `signed_seconds`.
    pub fn sign_delta(&self, delta: &Delta) -> Option<String> {
        let mut v: Value = serde_json::from_str(&delta.to_json()).ok()?;
        let t = now().max(0);
        let obj = v.as_object_mut()?;
        obj.insert("issuedAt".into(), json!(t));
        obj.insert("expiresAt".into(), json!(t + self.cfg.signed_seconds));
        Some(self.sign(v.to_string().as_bytes()))
    }

    /// Signs payload bytes with the active key; the envelope's JSON text.
    pub fn sign(&self, payload: &[u8]) -> String {
        let keys = self.keys();
        serde_json::to_string(&Envelope::sign(payload, &keys.active_id, &keys.active_secret)).unwrap_or_default()
    }

    /// Sends every edge stream a signed renewal of the current revision (under the writer
    /// lock, so it cannot overtake a delta). Blocking.
    pub fn renew(&self) -> ApiResult<()> {
        // A replica that is not current does not vouch for its state.
        if !self.is_ready() {
            return Ok(());
        }
        let _w = self.writer()?;
        let rev = self.engine().revision();
        let Some(env) = self.sign_delta(&Delta::new(rev, rev, Vec::new())) else { return Ok(()) };
        let ev = Event::default().id(rev.to_string()).event("delta").data(env);
        if let Ok(mut s) = self.subs.lock() {
            s.edges.retain(|x| x.try_send(ev.clone()).is_ok());
        }
        Ok(())
    }

    /// Registers a user's event stream; returns its receiver and the engine version it starts
    /// from. Registration and the version are read together, so no change falls between the
    /// stream's catch-up and its live events. A client resuming from a revision this replica
    /// has not reached yet (it saw it on another replica) gets only the changes after it.
    pub fn subscribe_user(
        &self,
        viewer: &str,
        session: &str,
        since: Option<u64>,
    ) -> ApiResult<(mpsc::Receiver<Event>, Arc<Engine>)> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut s = self.subs.lock().map_err(|_| ApiError::Internal("the subscriber lock was poisoned".into()))?;
        let engine = self.engine();
        let start = engine.revision().max(since.unwrap_or(0));
        s.users.push(UserSub { viewer: viewer.to_owned(), session: session.to_owned(), start, tx });
        Ok((rx, engine))
    }

    /// Registers an edge event stream.
    pub fn subscribe_edge(&self) -> ApiResult<(mpsc::Receiver<Event>, u64)> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut s = self.subs.lock().map_err(|_| ApiError::Internal("the subscriber lock was poisoned".into()))?;
        let rev = self.engine().revision();
        s.edges.push(tx);
        Ok((rx, rev))
    }

    /// Creates a session for `user`; returns its token (the only place it exists in the clear).
    pub fn create_session(&self, user: &str) -> ApiResult<(String, Session)> {
        let token = crate::auth::new_token().map_err(ApiError::Internal)?;
        let id = crate::auth::new_session_id().map_err(ApiError::Internal)?;
        let row = SessionRow {
            id: id.clone(),
            token_hash: crate::auth::digest(&token),
            user: user.to_owned(),
            expires_at: now() + self.cfg.session_seconds,
        };
        self.db.create_session(&row)?;
        let session = Session { id, user: user.to_owned(), expires_at: row.expires_at };
        self.sessions.insert(row.token_hash, session.clone());
        Ok((token, session))
    }

    /// Ends a session (logout). Blocking.
    pub fn end_session(&self, sid: &str, reason: &str) -> ApiResult<()> {
        self.db.end_session(sid, reason)?;
        self.forget_sessions(&[sid.to_owned()]);
        Ok(())
    }

    /// Ends the sessions past their expiry. Blocking.
    pub fn end_expired(&self) -> ApiResult<()> {
        let at = now();
        let mut all = self.sessions.expired(at);
        if all.is_empty() {
            return Ok(());
        }
        all.extend(self.db.end_expired_sessions(at)?);
        self.forget_sessions(&all);
        Ok(())
    }

    /// Forgets ended sessions: their tokens stop working, their streams close, edges are told.
    fn forget_sessions(&self, sids: &[String]) {
        if sids.is_empty() {
            return;
        }
        self.sessions.remove(sids);
        let ev = Event::default().event("revoked").data(json!({"sessions": sids}).to_string());
        if let Ok(mut s) = self.subs.lock() {
            s.users.retain(|x| !sids.contains(&x.session));
            s.edges.retain(|x| x.try_send(ev.clone()).is_ok());
        }
    }

    /// Reloads the signing keys when the store's active key changed (`rotate-key`). Blocking.
    pub fn reload_keys(&self) -> ApiResult<bool> {
        let rows = self.db.keys()?;
        let Some(next) = KeySet::of(&rows, self.cfg.key_keep_seconds(), now()) else {
            return Ok(false);
        };
        let cur = self.keys();
        if cur.active_id == next.active_id && cur.published.len() == next.published.len() {
            return Ok(false);
        }
        if let Ok(mut k) = self.keys.write() {
            *k = Arc::new(next);
        }
        Ok(true)
    }

    /// Applies the retention policy. Blocking.
    pub fn prune(&self) -> ApiResult<usize> {
        let r = self.cfg.retention;
        Ok(self.db.prune(r)?)
    }

    /// How many event streams are open: (user, edge).
    pub fn stream_counts(&self) -> (usize, usize) {
        self.subs.lock().map(|s| (s.users.len(), s.edges.len())).unwrap_or((0, 0))
    }
}

/// The next version to apply a delta to: a previous version no reader holds any more, caught
/// up by the deltas it missed; else (every one is held) a clone of the published version.
fn take_spare(w: &mut Writer, cur: &Arc<Engine>) -> Arc<Engine> {
    // Newest first: it has the fewest deltas to catch up.
    for i in (0..w.spares.len()).rev() {
        let Some(spare) = w.spares.get_mut(i) else { continue };
        let Some(e) = Arc::get_mut(spare) else { continue };
        let mut ok = true;
        while ok && e.revision() < cur.revision() {
            let rev = e.revision();
            ok = match w.recent.iter().find(|d| d.from.0 == rev) {
                Some(d) => e.apply_delta(d).is_ok(),
                None => false,
            };
        }
        let spare = w.spares.remove(i);
        if ok && spare.revision() == cur.revision() {
            return spare;
        }
    }
    Arc::new((**cur).clone())
}
