//! The PostgreSQL backend (SPEC §9): one database shared by N replicas, through
//! `tokio-postgres` with a `deadpool` pool.
//!
//! - **One global chain.** A write transaction takes a transaction-scoped advisory lock
//!   ([`LOCK_KEY`]) before anything else, so writers of every replica are serialized and each
//!   decides on the head it commits onto; the lock ends with the transaction (a killed replica's
//!   connection closes, and with it its transaction and lock).
//! - **Fan-out through the database.** A committed change notifies [`CHANGES`] with its
//!   revision, an ended session notifies [`SESSIONS`] with its id (`pg_notify` inside the
//!   transaction: delivered at commit, never for a rolled-back one). Replicas `LISTEN` (see
//!   `replica.rs`) and read the change rows; a notification is only a hint.
//! - **Shared counters.** Sessions, invitations, claim codes and throttling strikes are rows,
//!   so any replica answers any request.
//! - **Bounded waits.** Connecting gives up after 3 s, a pool checkout after 5 s, a statement
//!   after 10 s, waiting for a lock after 5 s; an idle transaction is cut after 10 s: no request
//!   outlives the server's request deadline because of the database.
//! - **Migrations** are numbered and applied in order under the same lock (`schema_migrations`),
//!   so replicas starting together apply each once.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use fleetgate::delta::Op;
use fleetgate::snapshot::{DeviceDoc, MembershipDoc, OrgDoc, SnapshotDoc, UserDoc};
use fleetgate::Delta;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

use super::{
    bad, now, plan_str, seed_ops, status_str, AuditRecord, AuditRow, Effects, InviteRow, KeyRow, Retention, SessionRow,
    StoreError, StoreResult, WORLD_TABLES,
};
use crate::throttle::Strikes;

/// The advisory lock that serializes writers (any replica, `rotate-key`, migrations).
pub const LOCK_KEY: i64 = 0x0066_6c65_6574_6761;
/// The channel notified with the revision of each committed change.
pub const CHANGES: &str = "fleetgate_changes";
/// The channel notified with the id of each ended session.
pub const SESSIONS: &str = "fleetgate_sessions";

/// The migrations, in order; each runs once, in a transaction.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL, parent TEXT, plan TEXT NOT NULL,
  suspended BOOLEAN NOT NULL, roles TEXT);
CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE memberships (user_id TEXT NOT NULL, org TEXT NOT NULL, role TEXT NOT NULL, PRIMARY KEY (user_id, org));
CREATE TABLE devices (id TEXT PRIMARY KEY, name TEXT NOT NULL, org TEXT NOT NULL, owner TEXT);
CREATE TABLE org_uids (uid BIGSERIAL PRIMARY KEY, org TEXT NOT NULL, live BOOLEAN NOT NULL);
CREATE INDEX org_uids_live ON org_uids (org, live);
CREATE TABLE passwords (user_id TEXT PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE sessions (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL,
  created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, ended_at BIGINT, end_reason TEXT);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_ended ON sessions (ended_at);
CREATE TABLE invites (token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, org TEXT NOT NULL,
  created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, accepted_at BIGINT, revoked_at BIGINT);
CREATE INDEX invites_user ON invites (user_id);
CREATE TABLE outbox (id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, email TEXT NOT NULL, org TEXT NOT NULL,
  subject TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE claim_codes (device TEXT PRIMARY KEY, code_hash TEXT NOT NULL);
CREATE TABLE device_commands (id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, device TEXT NOT NULL,
  user_id TEXT NOT NULL, name TEXT NOT NULL, params TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE audit (id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  org_uid BIGINT, target TEXT, outcome TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX audit_org ON audit (org_uid, id);
CREATE TABLE changes (revision BIGINT PRIMARY KEY, at BIGINT NOT NULL, delta TEXT NOT NULL, inverse TEXT NOT NULL);
CREATE TABLE keys (key_id TEXT PRIMARY KEY, secret TEXT NOT NULL, created_at BIGINT NOT NULL, retired_at BIGINT);
CREATE TABLE throttle (key TEXT PRIMARY KEY, count INTEGER NOT NULL, first BIGINT NOT NULL, level INTEGER NOT NULL,
  locked_until BIGINT NOT NULL, last BIGINT NOT NULL);
",
)];

fn pg<T>(r: Result<T, tokio_postgres::Error>) -> StoreResult<T> {
    r.map_err(pg_error)
}

/// A PostgreSQL error as a store error. Transient (503, try again): the server's answers that
/// say so — the connection classes (08), insufficient resources (53, e.g. too many connections
/// right after a restart), a lock or statement timeout (55P03, 57014), the server shutting down
/// or starting (57P01–57P03), an idle timeout (25P03, 57P05), a serialization failure or deadlock
/// (40001, 40P01) — and, without an answer, a closed connection, an I/O failure or a timeout.
/// Everything else (a constraint, a row that does not convert, a protocol or configuration
/// error) is a 500: trying again would not cure it.
fn pg_error(e: tokio_postgres::Error) -> StoreError {
    const TRANSIENT: [&str; 9] = ["55P03", "57014", "57P01", "57P02", "57P03", "25P03", "57P05", "40001", "40P01"];
    let transient = match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("53") || TRANSIENT.contains(&code)
        }
        None => {
            let io = std::error::Error::source(&e).is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
            e.is_closed() || io || e.to_string().contains("timeout")
        }
    };
    StoreError { message: format!("postgres: {e}"), unavailable: transient }
}

/// A failed `COMMIT` of a transaction that wrote. Rolled back for certain only when the server
/// says so with a serialization failure or deadlock (40001, 40P01: transient, try again);
/// otherwise (the connection lost mid-commit, the server going away) its outcome is unknown, so
/// it is a 500 and not a "try again" that could apply a command twice. A replica whose commit
/// did land finds it in the change log like any other.
fn commit_error(e: tokio_postgres::Error) -> StoreError {
    let rolled_back = e.as_db_error().is_some_and(|db| ["40001", "40P01"].contains(&db.code().code()));
    if rolled_back {
        StoreError::unavailable(format!("postgres: {e}"))
    } else {
        StoreError::new(format!("postgres: the COMMIT's outcome is unknown: {e}"))
    }
}

/// A pool checkout failure: waiting or a closed pool is transient; a connection the server
/// refused is what `pg_error` says of it; a missing runtime or a failed hook is a bug (500).
fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError as P;
    match e {
        P::Backend(e) => pg_error(e),
        e @ (P::Timeout(_) | P::Closed) => StoreError::unavailable(format!("postgres pool: {e}")),
        e => StoreError::new(format!("postgres pool: {e}")),
    }
}

/// The connection settings of a URL, with the bounded waits of this module.
pub fn config(url: &str) -> StoreResult<tokio_postgres::Config> {
    let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| StoreError::new(format!("--database-url: {e}")))?;
    cfg.connect_timeout(Duration::from_secs(3));
    cfg.keepalives(true);
    cfg.keepalives_idle(Duration::from_secs(5));
    cfg.keepalives_interval(Duration::from_secs(2));
    cfg.keepalives_retries(3);
    // A half-open connection (the database host gone) fails in seconds, not minutes.
    cfg.tcp_user_timeout(Duration::from_secs(10));
    // The URL's own `options` (e.g. `-c synchronous_commit=off`) come last and win.
    let own = cfg.get_options().unwrap_or_default().to_owned();
    cfg.options(format!(
        "-c statement_timeout=10000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=10000 {own}"
    ));
    cfg.application_name("fleetgate-server");
    Ok(cfg)
}

/// Runs a future to completion from synchronous code: on a runtime worker thread it first
/// hands the worker's other tasks off (`block_in_place`); on a blocking thread, or outside
/// the runtime, it simply blocks.
pub fn block<F: Future>(rt: &tokio::runtime::Handle, f: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => tokio::task::block_in_place(|| h.block_on(f)),
        Err(_) => rt.block_on(f),
    }
}

/// The PostgreSQL store: a pool of connections.
pub struct Postgres {
    pool: Pool,
    rt: tokio::runtime::Handle,
}

/// A serialized write transaction: a pooled connection inside `BEGIN` holding [`LOCK_KEY`].
pub struct PgTx {
    client: Object,
    rt: tokio::runtime::Handle,
    /// The chain's head, read with the lock (a commit's transaction).
    head: Option<u64>,
}

async fn rows(c: &Object, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<tokio_postgres::Row>> {
    let st = pg(c.prepare_cached(sql).await)?;
    pg(c.query(&st, params).await)
}

async fn exec(c: &Object, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
    let st = pg(c.prepare_cached(sql).await)?;
    pg(c.execute(&st, params).await)
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a tokio_postgres::Row, i: usize) -> StoreResult<T> {
    pg(row.try_get(i))
}

impl Postgres {
    /// Connects (checking the database answers) and applies the migrations.
    pub fn open(url: &str, rt: tokio::runtime::Handle) -> StoreResult<Self> {
        let mgr = Manager::from_config(config(url)?, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(mgr)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::new(format!("postgres pool: {e}")))?;
        let me = Self { pool, rt };
        me.migrate()?;
        Ok(me)
    }

    fn run<F: Future>(&self, f: F) -> F::Output {
        block(&self.rt, f)
    }

    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    fn migrate(&self) -> StoreResult<()> {
        self.write(|tx| {
            tx.run(async {
                let c = &tx.client;
                pg(c.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)").await)?;
                let row = pg(c.query_one("SELECT COALESCE(max(version), 0) FROM schema_migrations", &[]).await)?;
                let at: i32 = get(&row, 0)?;
                for (version, sql) in MIGRATIONS {
                    if *version > at {
                        pg(c.batch_execute(sql).await)?;
                        pg(c
                            .execute("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", &[version, &now()])
                            .await)?;
                    }
                }
                Ok(())
            })
        })
    }

    /// Runs `f` in a transaction holding the writers' advisory lock.
    pub fn write<R, E: From<StoreError>>(&self, f: impl FnOnce(&mut PgTx) -> Result<R, E>) -> Result<R, E> {
        self.write_tx(false, f)
    }

    /// Runs `f` in a transaction holding the writers' advisory lock, the chain's head read
    /// with it (a commit: one round trip to begin, lock and read the head).
    pub fn write_at_head<R, E: From<StoreError>>(&self, f: impl FnOnce(&mut PgTx) -> Result<R, E>) -> Result<R, E> {
        self.write_tx(true, f)
    }

    fn write_tx<R, E: From<StoreError>>(
        &self,
        at_head: bool,
        f: impl FnOnce(&mut PgTx) -> Result<R, E>,
    ) -> Result<R, E> {
        let client = self.run(self.client())?;
        let mut tx = PgTx { client, rt: self.rt.clone(), head: None };
        let began = tx.run(async {
            let c = &tx.client;
            let lock = pg(c.prepare_cached("SELECT pg_advisory_xact_lock($1)").await)?;
            let head = if at_head {
                Some(pg(c.prepare_cached("SELECT value FROM meta WHERE key = 'revision'").await)?)
            } else {
                None
            };
            // Sent together, answered in order: one round trip.
            let (begin, locked, row) =
                futures_util::future::join3(c.batch_execute("BEGIN"), c.execute(&lock, &[&LOCK_KEY]), async {
                    match &head {
                        Some(st) => c.query_opt(st, &[]).await.map(Some),
                        None => Ok(None),
                    }
                })
                .await;
            pg(begin)?;
            pg(locked)?;
            let value: Option<String> = match pg(row)?.flatten() {
                Some(r) => get(&r, 0)?,
                None => None,
            };
            Ok::<_, StoreError>(value.map(|v| v.parse().unwrap_or(0)))
        });
        match began {
            Ok(head) => tx.head = head,
            Err(e) => {
                // Never back into the pool inside a failed transaction (e.g. a lock timeout).
                discard(tx.client);
                return Err(e.into());
            }
        }
        let out = f(&mut tx);
        let end = if out.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let PgTx { client, rt, .. } = tx;
        match block(&rt, client.batch_execute(end)) {
            Ok(()) => {
                drop(client);
                out
            }
            Err(e) => {
                discard(client);
                out?;
                Err(commit_error(e).into())
            }
        }
    }

    /// Runs `f` with a pooled connection.
    fn with<R>(&self, f: impl AsyncFnOnce(&Object) -> StoreResult<R>) -> StoreResult<R> {
        self.run(async {
            let c = self.client().await?;
            f(&c).await
        })
    }

    /// Runs `f` in a plain (unlocked) transaction.
    fn in_tx<R>(&self, f: impl AsyncFnOnce(&Object) -> StoreResult<R>) -> StoreResult<R> {
        self.run(async {
            let c = self.client().await?;
            let out = match pg(c.batch_execute("BEGIN").await) {
                Ok(()) => f(&c).await,
                Err(e) => Err(e),
            };
            let end = if out.is_ok() { "COMMIT" } else { "ROLLBACK" };
            match c.batch_execute(end).await {
                Ok(()) => out,
                Err(e) => {
                    discard(c);
                    out.and(Err(commit_error(e)))
                }
            }
        })
    }

    pub fn seed(
        &self,
        doc: &SnapshotDoc,
        passwords: &[(String, String)],
        claims: &[(String, String)],
        only_if_empty: bool,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            tx.run(async {
                let c = &tx.client;
                if only_if_empty && get_meta(c, "revision").await?.is_some() {
                    return Ok(false);
                }
                pg(c.batch_execute(&format!("TRUNCATE {} RESTART IDENTITY", WORLD_TABLES.join(", "))).await)?;
                seed_rows(c, doc).await?;
                let (users, hashes): (Vec<&str>, Vec<&str>) =
                    passwords.iter().map(|(u, h)| (u.as_str(), h.as_str())).unzip();
                exec(c, "INSERT INTO passwords (user_id, hash) SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT (user_id) DO UPDATE SET hash = EXCLUDED.hash", &[&users, &hashes]).await?;
                let (devices, codes): (Vec<&str>, Vec<&str>) =
                    claims.iter().map(|(d, h)| (d.as_str(), h.as_str())).unzip();
                exec(c, "INSERT INTO claim_codes (device, code_hash) SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT (device) DO UPDATE SET code_hash = EXCLUDED.code_hash", &[&devices, &codes]).await?;
                set_meta(c, "revision", &doc.revision.0.to_string()).await?;
                set_meta(c, "oldest", &doc.revision.0.to_string()).await?;
                Ok(true)
            })
        })
    }

    pub fn audit(&self, entry: &AuditRow) -> StoreResult<()> {
        self.with(async |c| insert_audit(c, entry).await)
    }

    pub fn queue_device_command(
        &self,
        device: &str,
        user: &str,
        name: &str,
        params_json: &str,
        audit: &AuditRow,
    ) -> StoreResult<i64> {
        self.in_tx(async |c| {
            let r = rows(
                c,
                "INSERT INTO device_commands (at, device, user_id, name, params, status) VALUES ($1, $2, $3, $4, $5, 'queued') RETURNING id",
                &[&now(), &device, &user, &name, &params_json],
            )
            .await?;
            let id = match r.first() {
                Some(row) => get(row, 0)?,
                None => return Err(StoreError::new("no id for the queued command")),
            };
            insert_audit(c, audit).await?;
            Ok(id)
        })
    }

    pub fn create_session(&self, s: &SessionRow) -> StoreResult<()> {
        self.with(async |c| insert_session(c, s).await)
    }

    pub fn end_session(&self, sid: &str, reason: &str) -> StoreResult<bool> {
        self.with(async |c| Ok(!end_sessions_where(c, "id = $1", sid, reason).await?.is_empty()))
    }

    pub fn end_expired_sessions(&self, at: i64) -> StoreResult<Vec<String>> {
        // Every replica ends what it sees expire; no one needs telling.
        self.with(async |c| {
            let r = rows(
                c,
                "UPDATE sessions SET ended_at = $2, end_reason = 'expired' WHERE ended_at IS NULL AND expires_at <= $1 RETURNING id",
                &[&at, &now()],
            )
            .await?;
            r.iter().map(|row| get(row, 0)).collect()
        })
    }

    pub fn rotate_key(&self, key_id: &str, secret: &[u8; 32]) -> StoreResult<()> {
        self.write(|tx| {
            tx.run(async {
                let c = &tx.client;
                let t = now();
                exec(c, "UPDATE keys SET retired_at = $1 WHERE retired_at IS NULL", &[&t]).await?;
                exec(
                    c,
                    "INSERT INTO keys (key_id, secret, created_at) VALUES ($1, $2, $3)",
                    &[&key_id, &crate::auth::hex(secret), &t],
                )
                .await?;
                Ok(())
            })
        })
    }

    pub fn prune(&self, r: Retention) -> StoreResult<usize> {
        let t = now();
        self.write(|tx| {
            tx.run(async {
                let c = &tx.client;
                let revision: u64 = get_meta(c, "revision").await?.and_then(|s| s.parse().ok()).unwrap_or(0);
                let oldest: u64 = get_meta(c, "oldest").await?.and_then(|s| s.parse().ok()).unwrap_or(0);
                let cut = revision.saturating_sub(r.keep_changes);
                let mut n = 0;
                if cut > oldest {
                    n += exec(c, "DELETE FROM changes WHERE revision <= $1", &[&(cut as i64)]).await?;
                    set_meta(c, "oldest", &cut.to_string()).await?;
                }
                n += exec(c, "DELETE FROM audit WHERE at < $1", &[&(t - r.audit_days * 86_400)]).await?;
                n += exec(c, "DELETE FROM outbox WHERE at < $1", &[&(t - r.outbox_days * 86_400)]).await?;
                n += exec(c, "DELETE FROM device_commands WHERE at < $1", &[&(t - r.command_days * 86_400)]).await?;
                n +=
                    exec(c, "DELETE FROM sessions WHERE COALESCE(ended_at, expires_at) < $1", &[&(t - 86_400)]).await?;
                n += exec(
                    c,
                    "DELETE FROM invites WHERE COALESCE(accepted_at, revoked_at, expires_at) < $1",
                    &[&(t - 86_400)],
                )
                .await?;
                n +=
                    exec(c, "DELETE FROM throttle WHERE locked_until < $1 AND last < $2", &[&t, &(t - 86_400)]).await?;
                Ok(n as usize)
            })
        })
    }

    pub fn revision(&self) -> StoreResult<Option<u64>> {
        self.with(async |c| Ok(get_meta(c, "revision").await?.and_then(|s| s.parse().ok())))
    }

    pub fn load(&self) -> StoreResult<SnapshotDoc> {
        self.run(async {
            let c = self.client().await?;
            // One snapshot of the database: the revision and the rows agree.
            let out = match pg(c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await) {
                Ok(()) => load_in(&c).await,
                Err(e) => Err(e),
            };
            match c.batch_execute(if out.is_ok() { "COMMIT" } else { "ROLLBACK" }).await {
                Ok(()) => out,
                Err(e) => {
                    discard(c);
                    out.and(Err(pg_error(e)))
                }
            }
        })
    }

    pub fn inverses_between(&self, since: u64, upto: u64) -> StoreResult<Option<Vec<Op>>> {
        self.with(async |c| {
            if since < oldest(c).await? {
                return Ok(None);
            }
            let r = rows(
                c,
                "SELECT inverse FROM changes WHERE revision > $1 AND revision <= $2 ORDER BY revision DESC",
                &[&(since as i64), &(upto as i64)],
            )
            .await?;
            if r.len() as u64 != upto.saturating_sub(since) {
                return Ok(None);
            }
            let mut ops = Vec::new();
            for row in &r {
                let text: String = get(row, 0)?;
                match serde_json::from_str::<Vec<Op>>(&text) {
                    Ok(batch) => ops.extend(batch),
                    Err(e) => return bad("inverse", e),
                }
            }
            Ok(Some(ops))
        })
    }

    pub fn deltas_between(&self, since: u64, upto: u64) -> StoreResult<Option<Vec<Delta>>> {
        self.with(async |c| deltas_between(c, since, upto).await)
    }

    pub fn password_hash(&self, user: &str) -> StoreResult<Option<String>> {
        self.with(async |c| one(c, "SELECT hash FROM passwords WHERE user_id = $1", &[&user]).await)
    }

    pub fn live_sessions(&self, at: i64) -> StoreResult<Vec<SessionRow>> {
        self.with(async |c| {
            let r = rows(
                c,
                "SELECT id, token_hash, user_id, expires_at FROM sessions WHERE ended_at IS NULL AND expires_at > $1",
                &[&at],
            )
            .await?;
            r.iter().map(session_row).collect()
        })
    }

    pub fn live_session(&self, key: &str, by_id: bool, at: i64) -> StoreResult<Option<SessionRow>> {
        let sql = if by_id {
            "SELECT id, token_hash, user_id, expires_at FROM sessions WHERE id = $1 AND ended_at IS NULL AND expires_at > $2"
        } else {
            "SELECT id, token_hash, user_id, expires_at FROM sessions WHERE token_hash = $1 AND ended_at IS NULL AND expires_at > $2"
        };
        self.with(async |c| rows(c, sql, &[&key, &at]).await?.first().map(session_row).transpose())
    }

    pub fn ended_since(&self, since: i64) -> StoreResult<Vec<String>> {
        self.with(async |c| {
            let r = rows(
                c,
                "SELECT id FROM sessions WHERE ended_at >= $1 AND end_reason <> 'expired' ORDER BY ended_at",
                &[&since],
            )
            .await?;
            r.iter().map(|row| get(row, 0)).collect()
        })
    }

    pub fn invite(&self, token_hash: &str) -> StoreResult<Option<InviteRow>> {
        self.with(async |c| {
            let r = rows(
                c,
                "SELECT user_id, org, expires_at, accepted_at IS NULL AND revoked_at IS NULL FROM invites WHERE token_hash = $1",
                &[&token_hash],
            )
            .await?;
            r.first()
                .map(|row| {
                    Ok(InviteRow { user: get(row, 0)?, org: get(row, 1)?, expires_at: get(row, 2)?, open: get(row, 3)? })
                })
                .transpose()
        })
    }

    pub fn claim_code_hash(&self, device: &str) -> StoreResult<Option<String>> {
        self.with(async |c| one(c, "SELECT code_hash FROM claim_codes WHERE device = $1", &[&device]).await)
    }

    pub fn audit_page(&self, orgs: &[&str], before: Option<i64>, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let orgs: Vec<&str> = orgs.to_vec();
        self.with(async |c| {
            let r = rows(
                c,
                "SELECT a.id, a.at, a.actor, a.action, u.org, a.target, a.outcome, a.detail
                 FROM audit a JOIN org_uids u ON u.uid = a.org_uid
                 WHERE u.live AND u.org = ANY($1) AND a.id < $2
                 ORDER BY a.id DESC LIMIT $3",
                &[&orgs, &before.unwrap_or(i64::MAX), &(limit as i64)],
            )
            .await?;
            r.iter()
                .map(|row| {
                    let detail: String = get(row, 7)?;
                    let entry = AuditRow {
                        actor: get(row, 2)?,
                        action: get(row, 3)?,
                        org: get(row, 4)?,
                        target: get(row, 5)?,
                        outcome: get(row, 6)?,
                        detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
                    };
                    Ok(AuditRecord { id: get(row, 0)?, at: get(row, 1)?, row: entry })
                })
                .collect()
        })
    }

    pub fn outbox(&self, orgs: &[&str]) -> StoreResult<Vec<Value>> {
        let orgs: Vec<&str> = orgs.to_vec();
        self.with(async |c| {
            let r = rows(
                c,
                "SELECT id, at, email, org, subject, body FROM outbox WHERE org = ANY($1) ORDER BY id DESC LIMIT 200",
                &[&orgs],
            )
            .await?;
            r.iter()
                .map(|row| {
                    Ok(serde_json::json!({"id": get::<i64>(row, 0)?, "at": get::<i64>(row, 1)?,
                        "email": get::<String>(row, 2)?, "org": get::<String>(row, 3)?,
                        "subject": get::<String>(row, 4)?, "body": get::<String>(row, 5)?}))
                })
                .collect()
        })
    }

    pub fn keys(&self) -> StoreResult<Vec<KeyRow>> {
        self.with(async |c| {
            let r = rows(c, "SELECT key_id, secret, retired_at FROM keys ORDER BY created_at, key_id", &[]).await?;
            let mut out = Vec::new();
            for row in &r {
                let key_id: String = get(row, 0)?;
                let secret: String = get(row, 1)?;
                let Some(secret) = crate::auth::unhex32(&secret) else {
                    return bad("key", format!("`{key_id}` is not 32 hex bytes"));
                };
                out.push(KeyRow { key_id, secret, retired_at: get(row, 2)? });
            }
            Ok(out)
        })
    }

    /// The stored strikes of `keys`.
    pub fn strikes_of(&self, keys: &[&str]) -> StoreResult<Vec<(String, Strikes)>> {
        let keys: Vec<&str> = keys.to_vec();
        self.with(async |c| {
            let r = rows(
                c,
                "SELECT count, first, level, locked_until, last, key FROM throttle WHERE key = ANY($1)",
                &[&keys],
            )
            .await?;
            r.iter().map(|row| Ok((get(row, 5)?, strikes_row(row)?))).collect()
        })
    }

    /// Updates the strikes of `key` under its row lock.
    pub fn strike(&self, key: &str, f: &dyn Fn(Strikes) -> Strikes) -> StoreResult<()> {
        self.in_tx(async |c| {
            exec(
                c,
                "INSERT INTO throttle (key, count, first, level, locked_until, last) VALUES ($1, 0, 0, 0, 0, 0) ON CONFLICT (key) DO NOTHING",
                &[&key],
            )
            .await?;
            let r = rows(
                c,
                "SELECT count, first, level, locked_until, last FROM throttle WHERE key = $1 FOR UPDATE",
                &[&key],
            )
            .await?;
            let cur = match r.first() {
                Some(row) => strikes_row(row)?,
                None => Strikes::default(),
            };
            let s = f(cur);
            exec(
                c,
                "UPDATE throttle SET count = $2, first = $3, level = $4, locked_until = $5, last = $6 WHERE key = $1",
                &[&key, &(s.count.min(i32::MAX as u32) as i32), &s.first, &(s.level.min(64) as i32), &s.locked_until, &s.last],
            )
            .await?;
            Ok(())
        })
    }

    /// Forgets the strikes of `key`.
    pub fn forgive(&self, key: &str) -> StoreResult<()> {
        self.with(async |c| exec(c, "DELETE FROM throttle WHERE key = $1", &[&key]).await.map(|_| ()))
    }
}

impl PgTx {
    fn run<F: Future>(&self, f: F) -> F::Output {
        block(&self.rt, f)
    }

    pub fn head(&mut self) -> StoreResult<u64> {
        if let Some(h) = self.head {
            return Ok(h);
        }
        self.run(async { Ok(get_meta(&self.client, "revision").await?.and_then(|s| s.parse().ok()).unwrap_or(0)) })
    }

    pub fn deltas_between(&mut self, since: u64, upto: u64) -> StoreResult<Option<Vec<Delta>>> {
        self.run(deltas_between(&self.client, since, upto))
    }

    pub fn audit(&mut self, entry: &AuditRow) -> StoreResult<()> {
        self.run(insert_audit(&self.client, entry))
    }

    /// Writes an accepted change and its effects; notifies [`CHANGES`] (and [`SESSIONS`] for
    /// each session it ends) at commit. Returns the ended sessions' ids. Every statement goes
    /// in one pipelined round trip.
    pub fn commit(
        &mut self,
        delta: &Delta,
        inverse: &[Op],
        audit: &AuditRow,
        fx: &Effects,
    ) -> StoreResult<Vec<String>> {
        let inverse_json = serde_json::to_string(inverse).map_err(|e| StoreError::new(e.to_string()))?;
        let t = now();
        let mut p = Pipeline::default();
        // The audit entry names the org as it is before the change (a deleted org's last entry).
        audit_statement(&mut p, audit);
        for op in &delta.ops {
            op_statements(&mut p, op);
        }
        let rev = delta.to.0 as i64;
        p.add(
            "INSERT INTO changes (revision, at, delta, inverse) VALUES ($1, $2, $3, $4)",
            vec![Box::new(rev), Box::new(t), Box::new(delta.to_json()), Box::new(inverse_json)],
        );
        p.add(
            "INSERT INTO meta (key, value) VALUES ('revision', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            vec![Box::new(delta.to.0.to_string())],
        );
        p.add("SELECT pg_notify($1, $2)", vec![Box::new(CHANGES), Box::new(delta.to.0.to_string())]);
        if let Some(inv) = &fx.invite {
            p.add(
                "INSERT INTO invites (token_hash, user_id, org, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                vec![
                    Box::new(inv.token_hash.clone()),
                    Box::new(inv.user.clone()),
                    Box::new(inv.org.clone()),
                    Box::new(t),
                    Box::new(inv.expires_at),
                ],
            );
            p.add(
                "INSERT INTO outbox (at, email, org, subject, body) VALUES ($1, $2, $3, $4, $5)",
                vec![
                    Box::new(t),
                    Box::new(inv.email.clone()),
                    Box::new(inv.org.clone()),
                    Box::new("You are invited to fleetgate"),
                    Box::new(inv.message.clone()),
                ],
            );
        }
        if let Some(acc) = &fx.acceptance {
            p.add(
                "UPDATE invites SET accepted_at = $2 WHERE token_hash = $1",
                vec![Box::new(acc.token_hash.clone()), Box::new(t)],
            );
            p.add(
                "INSERT INTO passwords (user_id, hash) VALUES ($1, $2) ON CONFLICT (user_id) DO UPDATE SET hash = EXCLUDED.hash",
                vec![Box::new(acc.user.clone()), Box::new(acc.password_hash.clone())],
            );
            session_statement(&mut p, &acc.session);
        }
        for device in &fx.void_claims {
            p.add("DELETE FROM claim_codes WHERE device = $1", vec![Box::new(device.clone())]);
        }
        for (user, org) in &fx.revoke_invites {
            p.add(
                "UPDATE invites SET revoked_at = $3 WHERE user_id = $1 AND ($2 = '' OR org = $2) AND accepted_at IS NULL AND revoked_at IS NULL",
                vec![Box::new(user.clone()), Box::new(org.clone()), Box::new(t)],
            );
        }
        let first_ended = p.len();
        for user in &fx.end_sessions_of {
            p.add(
                &end_sessions_sql("user_id = $1"),
                vec![Box::new(user.clone()), Box::new(t), Box::new(fx.end_reason)],
            );
        }
        let results = self.run(p.run(&self.client))?;
        let mut ended = Vec::new();
        for rows in results.iter().skip(first_ended) {
            for row in rows {
                ended.push(get(row, 0)?);
            }
        }
        Ok(ended)
    }
}

/// A statement parameter owned by a [`Pipeline`].
type Param = Box<dyn ToSql + Sync + Send>;

/// Statements sent together on one connection: tokio-postgres pipelines queries that are
/// polled concurrently, so they cost one round trip instead of one each. The server runs
/// them in the order sent (all prepared first, so none waits on its preparation and is
/// overtaken); the first error fails the whole transaction.
#[derive(Default)]
struct Pipeline {
    statements: Vec<(String, Vec<Param>)>,
}

impl Pipeline {
    fn add(&mut self, sql: &str, params: Vec<Param>) {
        self.statements.push((sql.to_owned(), params));
    }

    fn len(&self) -> usize {
        self.statements.len()
    }

    async fn run(&self, c: &Object) -> StoreResult<Vec<Vec<tokio_postgres::Row>>> {
        let prepared =
            pg(futures_util::future::try_join_all(self.statements.iter().map(|(sql, _)| c.prepare_cached(sql))).await)?;
        let queries = prepared.iter().zip(&self.statements).map(|(st, (_, params))| {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
            async move { c.query(st, &refs).await }
        });
        pg(futures_util::future::try_join_all(queries).await)
    }
}

fn audit_statement(p: &mut Pipeline, e: &AuditRow) {
    p.add(
        "INSERT INTO audit (at, actor, action, org_uid, target, outcome, detail)
         VALUES ($1, $2, $3, (SELECT uid FROM org_uids WHERE org = $4 AND live), $5, $6, $7)",
        vec![
            Box::new(now()),
            Box::new(e.actor.clone()),
            Box::new(e.action.clone()),
            Box::new(e.org.clone()),
            Box::new(e.target.clone()),
            Box::new(e.outcome.clone()),
            Box::new(e.detail.to_string()),
        ],
    );
}

/// The statements writing one delta op to the entity tables (a newly created org gets a
/// fresh identity).
fn op_statements(p: &mut Pipeline, op: &Op) {
    match op {
        Op::PutOrg { org } => {
            let roles = org.roles.as_ref().map(|r| serde_json::to_string(r).unwrap_or_default());
            p.add(
                "INSERT INTO orgs (id, name, parent, plan, suspended, roles) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, parent = EXCLUDED.parent, plan = EXCLUDED.plan,
                 suspended = EXCLUDED.suspended, roles = EXCLUDED.roles",
                vec![
                    Box::new(org.id.to_string()),
                    Box::new(org.name.clone()),
                    Box::new(org.parent.as_ref().map(|p| p.to_string())),
                    Box::new(plan_str(org.plan)),
                    Box::new(org.suspended),
                    Box::new(roles),
                ],
            );
            p.add(
                "INSERT INTO org_uids (org, live) SELECT $1, true WHERE NOT EXISTS (SELECT 1 FROM org_uids WHERE org = $1 AND live)",
                vec![Box::new(org.id.to_string())],
            );
        }
        Op::PutUser { user } => p.add(
            "INSERT INTO users (id, email, name, status) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name, status = EXCLUDED.status",
            vec![
                Box::new(user.id.to_string()),
                Box::new(user.email.clone()),
                Box::new(user.name.clone()),
                Box::new(status_str(user.status)),
            ],
        ),
        Op::PutMembership { membership: m } => p.add(
            "INSERT INTO memberships (user_id, org, role) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, org) DO UPDATE SET role = EXCLUDED.role",
            vec![Box::new(m.user.to_string()), Box::new(m.org.to_string()), Box::new(m.role.to_string())],
        ),
        Op::PutDevice { device: d } => p.add(
            "INSERT INTO devices (id, name, org, owner) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, org = EXCLUDED.org, owner = EXCLUDED.owner",
            vec![
                Box::new(d.id.to_string()),
                Box::new(d.name.clone()),
                Box::new(d.org.to_string()),
                Box::new(d.owner.as_ref().map(|o| o.to_string())),
            ],
        ),
        Op::RemoveOrg { id } => {
            p.add("DELETE FROM orgs WHERE id = $1", vec![Box::new(id.to_string())]);
            p.add("UPDATE org_uids SET live = false WHERE org = $1", vec![Box::new(id.to_string())]);
        }
        Op::RemoveUser { id } => {
            p.add("DELETE FROM users WHERE id = $1", vec![Box::new(id.to_string())]);
            p.add("DELETE FROM passwords WHERE user_id = $1", vec![Box::new(id.to_string())]);
        }
        Op::RemoveDevice { id } => p.add("DELETE FROM devices WHERE id = $1", vec![Box::new(id.to_string())]),
        Op::RemoveMembership { user, org } => p.add(
            "DELETE FROM memberships WHERE user_id = $1 AND org = $2",
            vec![Box::new(user.to_string()), Box::new(org.to_string())],
        ),
    }
}

/// Closes a connection instead of returning it to the pool (its transaction state is unknown).
fn discard(c: Object) {
    drop(Object::take(c));
}

fn session_row(row: &tokio_postgres::Row) -> StoreResult<SessionRow> {
    Ok(SessionRow { id: get(row, 0)?, token_hash: get(row, 1)?, user: get(row, 2)?, expires_at: get(row, 3)? })
}

fn strikes_row(row: &tokio_postgres::Row) -> StoreResult<Strikes> {
    Ok(Strikes {
        count: get::<i32>(row, 0)?.max(0) as u32,
        first: get(row, 1)?,
        level: get::<i32>(row, 2)?.max(0) as u32,
        locked_until: get(row, 3)?,
        last: get(row, 4)?,
    })
}

async fn one(c: &Object, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Option<String>> {
    rows(c, sql, params).await?.first().map(|r| get(r, 0)).transpose()
}

async fn get_meta(c: &Object, key: &str) -> StoreResult<Option<String>> {
    one(c, "SELECT value FROM meta WHERE key = $1", &[&key]).await
}

async fn set_meta(c: &Object, key: &str, value: &str) -> StoreResult<()> {
    exec(
        c,
        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&key, &value],
    )
    .await
    .map(|_| ())
}

async fn oldest(c: &Object) -> StoreResult<u64> {
    Ok(get_meta(c, "oldest").await?.and_then(|s| s.parse().ok()).unwrap_or(0))
}

async fn deltas_between(c: &Object, since: u64, upto: u64) -> StoreResult<Option<Vec<Delta>>> {
    if since < oldest(c).await? {
        return Ok(None);
    }
    let r = rows(
        c,
        "SELECT delta FROM changes WHERE revision > $1 AND revision <= $2 ORDER BY revision",
        &[&(since as i64), &(upto as i64)],
    )
    .await?;
    if r.len() as u64 != upto.saturating_sub(since) {
        // Pruned between the two reads (another replica's retention): as if too old.
        return Ok(None);
    }
    let mut out = Vec::with_capacity(r.len());
    for row in &r {
        let text: String = get(row, 0)?;
        match Delta::parse(&text) {
            Ok(d) => out.push(d),
            Err(e) => return bad("delta", e),
        }
    }
    Ok(Some(out))
}

async fn insert_session(c: &Object, s: &SessionRow) -> StoreResult<()> {
    let mut p = Pipeline::default();
    session_statement(&mut p, s);
    p.run(c).await.map(|_| ())
}

fn session_statement(p: &mut Pipeline, s: &SessionRow) {
    p.add(
        "INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        vec![
            Box::new(s.id.clone()),
            Box::new(s.token_hash.clone()),
            Box::new(s.user.clone()),
            Box::new(now()),
            Box::new(s.expires_at),
        ],
    );
}

/// Ends the live sessions matching `cond` (`$1` bound to `arg`), telling every replica.
async fn end_sessions_where(c: &Object, cond: &str, arg: &str, reason: &str) -> StoreResult<Vec<String>> {
    let r = rows(c, &end_sessions_sql(cond), &[&arg, &now(), &reason]).await?;
    r.iter().map(|row| get(row, 0)).collect()
}

/// Ends the live sessions matching `cond` (`$1`; `$2` the time, `$3` the reason), notifying
/// each one's id on [`SESSIONS`]; answers their ids.
fn end_sessions_sql(cond: &str) -> String {
    format!(
        "WITH ended AS (UPDATE sessions SET ended_at = $2, end_reason = $3 WHERE ended_at IS NULL AND {cond} RETURNING id)
         SELECT id, pg_notify('{SESSIONS}', id) FROM ended"
    )
}

async fn insert_audit(c: &Object, e: &AuditRow) -> StoreResult<()> {
    let mut p = Pipeline::default();
    audit_statement(&mut p, e);
    p.run(c).await.map(|_| ())
}

/// Writes a seed's entities with one statement per table (arrays unnested server-side).
async fn seed_rows(c: &Object, doc: &SnapshotDoc) -> StoreResult<()> {
    let ops = seed_ops(doc);
    let (mut oid, mut oname, mut oparent, mut oplan, mut osusp, mut oroles) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut uid, mut uemail, mut uname, mut ustatus) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut muser, mut morg, mut mrole) = (Vec::new(), Vec::new(), Vec::new());
    let (mut did, mut dname, mut dorg, mut downer) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for op in &ops {
        match op {
            Op::PutOrg { org } => {
                oid.push(org.id.as_str());
                oname.push(org.name.as_str());
                oparent.push(org.parent.as_ref().map(|p| p.as_str()));
                oplan.push(plan_str(org.plan));
                osusp.push(org.suspended);
                oroles.push(org.roles.as_ref().map(|r| serde_json::to_string(r).unwrap_or_default()));
            }
            Op::PutUser { user } => {
                uid.push(user.id.as_str());
                uemail.push(user.email.as_str());
                uname.push(user.name.as_str());
                ustatus.push(status_str(user.status));
            }
            Op::PutMembership { membership: m } => {
                muser.push(m.user.as_str());
                morg.push(m.org.as_str());
                mrole.push(m.role.as_str());
            }
            Op::PutDevice { device: d } => {
                did.push(d.id.as_str());
                dname.push(d.name.as_str());
                dorg.push(d.org.as_str());
                downer.push(d.owner.as_ref().map(|o| o.as_str()));
            }
            _ => {}
        }
    }
    exec(c, "INSERT INTO orgs (id, name, parent, plan, suspended, roles) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[])",
        &[&oid, &oname, &oparent, &oplan, &osusp, &oroles]).await?;
    exec(c, "INSERT INTO org_uids (org, live) SELECT o, true FROM UNNEST($1::text[]) AS o", &[&oid]).await?;
    exec(c, "INSERT INTO users (id, email, name, status) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])",
        &[&uid, &uemail, &uname, &ustatus]).await?;
    exec(
        c,
        "INSERT INTO memberships (user_id, org, role) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])",
        &[&muser, &morg, &mrole],
    )
    .await?;
    exec(c, "INSERT INTO devices (id, name, org, owner) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])",
        &[&did, &dname, &dorg, &downer]).await?;
    Ok(())
}

async fn load_in(c: &Object) -> StoreResult<SnapshotDoc> {
    let revision = get_meta(c, "revision").await?.and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut doc = SnapshotDoc::empty(revision);
    for row in
        &rows(c, "SELECT id, name, parent, plan, suspended, roles FROM orgs ORDER BY id COLLATE \"C\"", &[]).await?
    {
        let roles: Option<String> = get(row, 5)?;
        let mut v = serde_json::json!({"id": get::<String>(row, 0)?, "name": get::<String>(row, 1)?,
            "parent": get::<Option<String>>(row, 2)?, "plan": get::<String>(row, 3)?, "suspended": get::<bool>(row, 4)?});
        if let (Some(o), Some(t)) = (v.as_object_mut(), roles) {
            o.insert("roles".into(), serde_json::from_str::<Value>(&t).unwrap_or(Value::Null));
        }
        match serde_json::from_value::<OrgDoc>(v) {
            Ok(o) => doc.orgs.push(o),
            Err(e) => return bad("org", e),
        }
    }
    for row in &rows(c, "SELECT id, email, name, status FROM users ORDER BY id COLLATE \"C\"", &[]).await? {
        let v = serde_json::json!({"id": get::<String>(row, 0)?, "email": get::<String>(row, 1)?,
            "name": get::<String>(row, 2)?, "status": get::<String>(row, 3)?});
        match serde_json::from_value::<UserDoc>(v) {
            Ok(u) => doc.users.push(u),
            Err(e) => return bad("user", e),
        }
    }
    for row in
        &rows(c, "SELECT user_id, org, role FROM memberships ORDER BY user_id COLLATE \"C\", org COLLATE \"C\"", &[])
            .await?
    {
        let v = serde_json::json!({"user": get::<String>(row, 0)?, "org": get::<String>(row, 1)?,
            "role": get::<String>(row, 2)?});
        match serde_json::from_value::<MembershipDoc>(v) {
            Ok(m) => doc.memberships.push(m),
            Err(e) => return bad("membership", e),
        }
    }
    for row in &rows(c, "SELECT id, name, org, owner FROM devices ORDER BY id COLLATE \"C\"", &[]).await? {
        let v = serde_json::json!({"id": get::<String>(row, 0)?, "name": get::<String>(row, 1)?,
            "org": get::<String>(row, 2)?, "owner": get::<Option<String>>(row, 3)?});
        match serde_json::from_value::<DeviceDoc>(v) {
            Ok(d) => doc.devices.push(d),
            Err(e) => return bad("device", e),
        }
    }
    Ok(doc)
}
