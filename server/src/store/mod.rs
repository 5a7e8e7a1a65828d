//! The store: every SQL statement of the server lives under this module, in one backend per
//! database — [`sqlite`] (the embedded default, one process) and [`pg`] (PostgreSQL, shared
//! by N replicas, SPEC §9). Both keep the same things: the state (orgs, users, memberships,
//! devices), credentials (Argon2id password and claim-code hashes, SHA-256 session and invite
//! token hashes), sessions, invitations, queued device commands, the audit trail, the outbox,
//! the change log of deltas and their inverses, and the signing keys; PostgreSQL also keeps
//! the throttling counters (one process keeps them in memory).
//!
//! [`Db`] is the one interface the server uses. Every method blocks: call it from a blocking
//! thread (the PostgreSQL backend hands the worker thread off first if it is called on one).
//!
//! **One writer at a time, across every process.** [`Db::write`] runs a closure inside a
//! serialized write transaction — SQLite's `BEGIN IMMEDIATE` (the database's write lock),
//! PostgreSQL's transaction-scoped advisory lock — so a command is decided on the state it
//! commits onto: the closure reads the chain's head ([`Tx::head`]), catches the engine up with
//! the changes other replicas committed ([`Tx::deltas_between`]), decides, and writes. Every
//! accepted change is one transaction: the entity rows, the change-log row, the new revision,
//! the audit entry and the change's side effects (invitations, claim codes, sessions) commit
//! together or not at all; on PostgreSQL the same transaction notifies the other replicas
//! (`NOTIFY`, delivered at commit).

pub mod pg;
pub mod sqlite;

use std::path::Path;

use fleetgate::delta::Op;
use fleetgate::snapshot::SnapshotDoc;
use fleetgate::Delta;
use serde_json::Value;

use crate::throttle::Strikes;

/// A store failure, for the log. Clients see a generic 500, or, when the store is only
/// unavailable for now (the database unreachable or restarting, a connection lost, a lock or
/// statement timeout, SQLite busy), 503 `UNAVAILABLE` with `Retry-After`: nothing was applied
/// that the client was told of, and trying again later is the right thing to do.
#[derive(Debug)]
pub struct StoreError {
    pub message: String,
    /// Transient: the database is unreachable or busy, not the request or the data wrong.
    pub unavailable: bool,
}

impl StoreError {
    /// A store failure that trying again will not cure.
    pub fn new(message: impl Into<String>) -> Self {
        StoreError { message: message.into(), unavailable: false }
    }

    /// The store is unavailable for now (see [`StoreError`]).
    pub fn unavailable(message: impl Into<String>) -> Self {
        StoreError { message: message.into(), unavailable: true }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A store result.
pub type StoreResult<T> = Result<T, StoreError>;

fn bad<T>(what: &str, e: impl std::fmt::Display) -> StoreResult<T> {
    Err(StoreError::new(format!("stored {what}: {e}")))
}

/// The tables a seed empties (the signing keys and throttling counters stay).
const WORLD_TABLES: &[&str] = &[
    "orgs",
    "users",
    "memberships",
    "devices",
    "org_uids",
    "passwords",
    "sessions",
    "invites",
    "outbox",
    "claim_codes",
    "device_commands",
    "audit",
    "changes",
];

/// One audit entry to write. `org` is an org id resolved to its current identity (`org_uids`)
/// when written, so a later org of the same id never sees it.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub actor: String,
    pub action: String,
    pub org: Option<String>,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: Value,
}

/// An audit entry as read back: its id, time, and the row (`org` as the org's id).
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub row: AuditRow,
}

/// A stored session.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub token_hash: String,
    pub user: String,
    pub expires_at: i64,
}

/// A pending invitation as read back.
#[derive(Debug, Clone)]
pub struct InviteRow {
    pub user: String,
    pub org: String,
    pub expires_at: i64,
    pub open: bool,
}

/// A new invitation written with the delta that creates its pending user.
#[derive(Debug, Clone)]
pub struct NewInvite {
    pub token_hash: String,
    pub user: String,
    pub org: String,
    pub expires_at: i64,
    pub email: String,
    pub message: String,
}

/// An accepted invitation: its token, the new password hash and the first session.
#[derive(Debug, Clone)]
pub struct Acceptance {
    pub token_hash: String,
    pub user: String,
    pub password_hash: String,
    pub session: SessionRow,
}

/// What commits with a delta besides the entity rows.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    pub invite: Option<NewInvite>,
    pub acceptance: Option<Acceptance>,
    /// Claim codes that die (used, or the device got an owner or was removed).
    pub void_claims: Vec<String>,
    /// Invitations revoked: `(user, org)`; an empty org revokes all of the user's.
    pub revoke_invites: Vec<(String, String)>,
    /// Users whose sessions end, with the reason.
    pub end_sessions_of: Vec<String>,
    pub end_reason: &'static str,
}

/// A signing key as stored.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub key_id: String,
    pub secret: [u8; 32],
    pub retired_at: Option<i64>,
}

/// How long things are kept (documented flags of the server).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep_changes: u64,
    pub audit_days: i64,
    pub outbox_days: i64,
    pub command_days: i64,
}

fn plan_str(p: fleetgate::Plan) -> &'static str {
    match p {
        fleetgate::Plan::Free => "free",
        fleetgate::Plan::Plus => "plus",
        fleetgate::Plan::Pro => "pro",
    }
}

fn status_str(s: fleetgate::Status) -> &'static str {
    match s {
        fleetgate::Status::Active => "active",
        fleetgate::Status::Pending => "pending",
        fleetgate::Status::Suspended => "suspended",
    }
}

/// The seed ops of a snapshot document: every entity as a put.
fn seed_ops(doc: &SnapshotDoc) -> Vec<Op> {
    doc.orgs
        .iter()
        .map(|o| Op::PutOrg { org: o.clone() })
        .chain(doc.users.iter().map(|u| Op::PutUser { user: u.clone() }))
        .chain(doc.memberships.iter().map(|m| Op::PutMembership { membership: m.clone() }))
        .chain(doc.devices.iter().map(|d| Op::PutDevice { device: d.clone() }))
        .collect()
}

/// The store: one of the two backends.
#[derive(Clone)]
pub enum Db {
    Sqlite(std::sync::Arc<sqlite::Sqlite>),
    Postgres(std::sync::Arc<pg::Postgres>),
}

/// A serialized write transaction (see [`Db::write`]).
pub enum Tx<'a> {
    Sqlite(&'a rusqlite::Transaction<'a>),
    Postgres(&'a mut pg::PgTx),
}

macro_rules! each {
    ($self:expr, $b:ident => $e:expr) => {
        match $self {
            Db::Sqlite($b) => $e,
            Db::Postgres($b) => $e,
        }
    };
}

impl Db {
    /// Opens (creating if needed) a SQLite database file. `reset` drops a database of an older
    /// schema (it is about to be replaced by a seed); without it, such a database is an error.
    pub fn sqlite(path: &Path, full_sync: bool, reset: bool) -> StoreResult<Self> {
        Ok(Db::Sqlite(std::sync::Arc::new(sqlite::Sqlite::open(path, full_sync, reset)?)))
    }

    /// Connects to PostgreSQL (`postgres://…`) and applies its migrations. `rt` runs the driver.
    pub fn postgres(url: &str, rt: tokio::runtime::Handle) -> StoreResult<Self> {
        Ok(Db::Postgres(std::sync::Arc::new(pg::Postgres::open(url, rt)?)))
    }

    /// Whether other processes share this store (their sessions, counters and changes).
    pub fn shared(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Runs `f` in a serialized write transaction: committed when `f` returns `Ok`, rolled back
    /// otherwise (and when committing fails: the error is returned).
    pub fn write<R, E: From<StoreError>>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<R, E>) -> Result<R, E> {
        match self {
            Db::Sqlite(s) => s.write(|tx| f(&mut Tx::Sqlite(tx))),
            Db::Postgres(p) => p.write_at_head(|tx| f(&mut Tx::Postgres(tx))),
        }
    }

    /// Replaces the whole world with a seed: the snapshot, password hashes and claim-code
    /// hashes. Sessions, invitations, audit and change log start empty; signing keys are kept.
    /// With `only_if_empty`, a store that has a world already is left alone (returns `false`).
    pub fn seed(
        &self,
        doc: &SnapshotDoc,
        passwords: &[(String, String)],
        claims: &[(String, String)],
        only_if_empty: bool,
    ) -> StoreResult<bool> {
        each!(self, b => b.seed(doc, passwords, claims, only_if_empty))
    }

    /// Writes an audit entry on its own (device commands refused, wrong claim codes).
    pub fn audit(&self, entry: &AuditRow) -> StoreResult<()> {
        each!(self, b => b.audit(entry))
    }

    /// Queues a device command and audits it, in one transaction; returns its id.
    pub fn queue_device_command(
        &self,
        device: &str,
        user: &str,
        name: &str,
        params_json: &str,
        audit: &AuditRow,
    ) -> StoreResult<i64> {
        each!(self, b => b.queue_device_command(device, user, name, params_json, audit))
    }

    /// Stores a new session.
    pub fn create_session(&self, s: &SessionRow) -> StoreResult<()> {
        each!(self, b => b.create_session(s))
    }

    /// Ends one session (logout). Returns whether it was live.
    pub fn end_session(&self, sid: &str, reason: &str) -> StoreResult<bool> {
        each!(self, b => b.end_session(sid, reason))
    }

    /// Ends every live session past its expiry; returns their ids.
    pub fn end_expired_sessions(&self, at: i64) -> StoreResult<Vec<String>> {
        each!(self, b => b.end_expired_sessions(at))
    }

    /// Adds a signing key and makes it the active one: the previous active key is retired now.
    pub fn rotate_key(&self, key_id: &str, secret: &[u8; 32]) -> StoreResult<()> {
        each!(self, b => b.rotate_key(key_id, secret))
    }

    /// Applies the retention policy: the change log keeps the newest `keep_changes` revisions,
    /// audit entries, outbox messages and device commands their number of days, ended sessions
    /// and closed invitations a day past their end. Returns the rows removed.
    pub fn prune(&self, r: Retention) -> StoreResult<usize> {
        each!(self, b => b.prune(r))
    }

    /// The stored revision (the chain's head), or `None` for an empty store.
    pub fn revision(&self) -> StoreResult<Option<u64>> {
        each!(self, b => b.revision())
    }

    /// Loads the stored world as a snapshot document (one consistent read).
    pub fn load(&self) -> StoreResult<SnapshotDoc> {
        each!(self, b => b.load())
    }

    /// The inverse ops of the changes after `since` up to `upto`, newest first (to rebuild
    /// revision `since` from revision `upto`), or `None` when the log no longer reaches back.
    pub fn inverses_between(&self, since: u64, upto: u64) -> StoreResult<Option<Vec<Op>>> {
        each!(self, b => b.inverses_between(since, upto))
    }

    /// The forward deltas after `since` up to `upto`, oldest first, or `None` when the log no
    /// longer reaches back that far.
    pub fn deltas_between(&self, since: u64, upto: u64) -> StoreResult<Option<Vec<Delta>>> {
        each!(self, b => b.deltas_between(since, upto))
    }

    /// The stored password hash of a user.
    pub fn password_hash(&self, user: &str) -> StoreResult<Option<String>> {
        each!(self, b => b.password_hash(user))
    }

    /// The live sessions (not ended, not expired at `at`).
    pub fn live_sessions(&self, at: i64) -> StoreResult<Vec<SessionRow>> {
        each!(self, b => b.live_sessions(at))
    }

    /// The live session of a token hash or of a session id (`by_id`), at `at`.
    pub fn live_session(&self, key: &str, by_id: bool, at: i64) -> StoreResult<Option<SessionRow>> {
        each!(self, b => b.live_session(key, by_id, at))
    }

    /// The sessions that ended at or after `since` (logout, suspension, removal; not expiry).
    pub fn ended_since(&self, since: i64) -> StoreResult<Vec<String>> {
        each!(self, b => b.ended_since(since))
    }

    /// The invitation of a token hash.
    pub fn invite(&self, token_hash: &str) -> StoreResult<Option<InviteRow>> {
        each!(self, b => b.invite(token_hash))
    }

    /// The claim-code hash of a device.
    pub fn claim_code_hash(&self, device: &str) -> StoreResult<Option<String>> {
        each!(self, b => b.claim_code_hash(device))
    }

    /// A page of audit entries about the given orgs (by their current identity), newest first,
    /// older than `before` when given.
    pub fn audit_page(&self, orgs: &[&str], before: Option<i64>, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        each!(self, b => b.audit_page(orgs, before, limit))
    }

    /// Outbox messages (invitations) of the given orgs, newest first.
    pub fn outbox(&self, orgs: &[&str]) -> StoreResult<Vec<Value>> {
        each!(self, b => b.outbox(orgs))
    }

    /// Every stored signing key, oldest first.
    pub fn keys(&self) -> StoreResult<Vec<KeyRow>> {
        each!(self, b => b.keys())
    }

    /// Shared throttling counters (PostgreSQL only; one process counts in memory): the stored
    /// strikes of those of `keys` that have any.
    pub fn strikes_of(&self, keys: &[&str]) -> StoreResult<Vec<(String, Strikes)>> {
        match self {
            Db::Sqlite(_) => Ok(Vec::new()),
            Db::Postgres(p) => p.strikes_of(keys),
        }
    }

    /// Updates the shared strikes of `key` with `f` (row-locked: concurrent failures on any
    /// replica all count).
    pub fn strike(&self, key: &str, f: &dyn Fn(Strikes) -> Strikes) -> StoreResult<()> {
        match self {
            Db::Sqlite(_) => Ok(()),
            Db::Postgres(p) => p.strike(key, f),
        }
    }

    /// Forgets the shared strikes of `key`.
    pub fn forgive(&self, key: &str) -> StoreResult<()> {
        match self {
            Db::Sqlite(_) => Ok(()),
            Db::Postgres(p) => p.forgive(key),
        }
    }
}

impl Tx<'_> {
    /// The chain's head: the revision the store is at, inside this transaction.
    pub fn head(&mut self) -> StoreResult<u64> {
        match self {
            Tx::Sqlite(t) => sqlite::head(t),
            Tx::Postgres(t) => t.head(),
        }
    }

    /// The deltas after `since` up to `upto` (see [`Db::deltas_between`]), in this transaction.
    pub fn deltas_between(&mut self, since: u64, upto: u64) -> StoreResult<Option<Vec<Delta>>> {
        match self {
            Tx::Sqlite(t) => sqlite::deltas_between(t, since, upto),
            Tx::Postgres(t) => t.deltas_between(since, upto),
        }
    }

    /// Writes an accepted delta with its inverse, audit entry and effects (and, on PostgreSQL,
    /// notifies the other replicas at commit). Returns the ids of the sessions it ended.
    pub fn commit(
        &mut self,
        delta: &Delta,
        inverse: &[Op],
        audit: &AuditRow,
        fx: &Effects,
    ) -> StoreResult<Vec<String>> {
        match self {
            Tx::Sqlite(t) => sqlite::commit(t, delta, inverse, audit, fx),
            Tx::Postgres(t) => t.commit(delta, inverse, audit, fx),
        }
    }

    /// Writes an audit entry (a denied command) in this transaction.
    pub fn audit(&mut self, entry: &AuditRow) -> StoreResult<()> {
        match self {
            Tx::Sqlite(t) => sqlite::insert_audit(t, entry),
            Tx::Postgres(t) => t.audit(entry),
        }
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
