//! The SQLite backend: one process, one database file (WAL). One writer connection (write
//! transactions take the write lock up front, `BEGIN IMMEDIATE`, so they wait out another
//! writer — e.g. `rotate-key` — for the busy timeout instead of failing on upgrade) and a pool
//! of readers (WAL readers never block the writer). Throttling counters stay in the process.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use fleetgate::delta::Op;
use fleetgate::snapshot::{DeviceDoc, MembershipDoc, OrgDoc, SnapshotDoc, UserDoc};
use fleetgate::Delta;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::Value;

use super::{
    bad, now, plan_str, seed_ops, status_str, AuditRecord, AuditRow, Effects, InviteRow, KeyRow, Retention, SessionRow,
    StoreError, StoreResult, WORLD_TABLES,
};

fn db<T>(r: rusqlite::Result<T>) -> StoreResult<T> {
    r.map_err(store_error)
}

/// A SQLite error as a store error: busy past the busy timeout (another process holds the
/// database) is transient. (`SQLITE_LOCKED` is a conflict inside one connection here, no shared
/// cache: a bug that retrying does not cure.)
fn store_error(e: rusqlite::Error) -> StoreError {
    let busy = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy);
    StoreError { message: format!("database: {e}"), unavailable: busy }
}

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL, parent TEXT, plan TEXT NOT NULL,
  suspended INTEGER NOT NULL, roles TEXT);
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memberships (user TEXT NOT NULL, org TEXT NOT NULL, role TEXT NOT NULL, PRIMARY KEY (user, org));
CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, name TEXT NOT NULL, org TEXT NOT NULL, owner TEXT);
CREATE TABLE IF NOT EXISTS org_uids (uid INTEGER PRIMARY KEY AUTOINCREMENT, org TEXT NOT NULL, live INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS org_uids_live ON org_uids (org, live);
CREATE TABLE IF NOT EXISTS passwords (user TEXT PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, user TEXT NOT NULL,
  created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, ended_at INTEGER, end_reason TEXT);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user);
CREATE TABLE IF NOT EXISTS invites (token_hash TEXT PRIMARY KEY, user TEXT NOT NULL, org TEXT NOT NULL,
  created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, accepted_at INTEGER, revoked_at INTEGER);
CREATE INDEX IF NOT EXISTS invites_user ON invites (user);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, email TEXT NOT NULL,
  org TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claim_codes (device TEXT PRIMARY KEY, code_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS device_commands (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL,
  device TEXT NOT NULL, user TEXT NOT NULL, name TEXT NOT NULL, params TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, org_uid INTEGER, target TEXT, outcome TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_org ON audit (org_uid, id);
CREATE TABLE IF NOT EXISTS changes (revision INTEGER PRIMARY KEY, at INTEGER NOT NULL, delta TEXT NOT NULL,
  inverse TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, secret TEXT NOT NULL, created_at INTEGER NOT NULL,
  retired_at INTEGER);
";

fn configure(conn: &Connection, full_sync: bool) -> StoreResult<()> {
    db(conn.pragma_update(None, "journal_mode", "WAL"))?;
    db(conn.pragma_update(None, "synchronous", if full_sync { "FULL" } else { "NORMAL" }))?;
    db(conn.pragma_update(None, "foreign_keys", "OFF"))?;
    db(conn.busy_timeout(std::time::Duration::from_secs(5)))
}

/// The SQLite store: the writer connection and a pool of read connections.
pub struct Sqlite {
    writer: Mutex<Connection>,
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Sqlite {
    /// Opens (creating if needed) the database file. `reset` drops a database of an older
    /// schema (it is about to be replaced by a seed); without it, such a database is an error.
    pub fn open(path: &Path, full_sync: bool, reset: bool) -> StoreResult<Self> {
        let conn = db(Connection::open(path))?;
        configure(&conn, full_sync)?;
        let version: i64 = db(conn.query_row("PRAGMA user_version", [], |r| r.get(0)))?;
        let tables: i64 =
            db(conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)))?;
        if tables > 0 && version != SCHEMA_VERSION {
            if !reset {
                return Err(StoreError::new(format!(
                    "{} was written by another fleetgate version (schema {version}, this one writes {SCHEMA_VERSION}); \
                     start with --seed or --demo to replace it, or use a new --db",
                    path.display()
                )));
            }
            let names: Vec<String> = {
                let mut stmt =
                    db(conn
                        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"))?;
                let rows = db(stmt.query_map([], |r| r.get(0)))?;
                rows.collect::<rusqlite::Result<_>>().map_err(store_error)?
            };
            for name in names {
                db(conn.execute(&format!("DROP TABLE IF EXISTS \"{name}\""), []))?;
            }
        }
        db(conn.execute_batch(SCHEMA))?;
        db(conn.pragma_update(None, "user_version", SCHEMA_VERSION))?;
        Ok(Self { writer: Mutex::new(conn), path: path.to_owned(), idle: Mutex::new(Vec::new()) })
    }

    fn conn(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        self.writer.lock().map_err(|_| StoreError::new("the writer connection's lock was poisoned"))
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction on the writer connection.
    pub fn write<R, E: From<StoreError>>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<R, E>) -> Result<R, E> {
        let mut conn = self.conn()?;
        let tx = db(conn.transaction_with_behavior(TransactionBehavior::Immediate))?;
        let out = f(&tx)?;
        db(tx.commit())?;
        Ok(out)
    }

    /// Runs `f` on a read connection.
    fn read<R>(&self, f: impl FnOnce(Reads<'_>) -> StoreResult<R>) -> StoreResult<R> {
        let conn = self.idle.lock().ok().and_then(|mut v| v.pop());
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = db(Connection::open(&self.path))?;
                configure(&c, false)?;
                c
            }
        };
        let out = f(Reads(&conn));
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < 8 {
                idle.push(conn);
            }
        }
        out
    }

    pub fn seed(
        &self,
        doc: &SnapshotDoc,
        passwords: &[(String, String)],
        claims: &[(String, String)],
        only_if_empty: bool,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            if only_if_empty && get_meta(tx, "revision")?.is_some() {
                return Ok(false);
            }
            for t in WORLD_TABLES {
                db(tx.execute(&format!("DELETE FROM {t}"), []))?;
            }
            write_ops(tx, &seed_ops(doc))?;
            for (user, hash) in passwords {
                db(tx.execute("INSERT OR REPLACE INTO passwords (user, hash) VALUES (?1, ?2)", params![user, hash]))?;
            }
            for (device, hash) in claims {
                db(tx.execute(
                    "INSERT OR REPLACE INTO claim_codes (device, code_hash) VALUES (?1, ?2)",
                    params![device, hash],
                ))?;
            }
            set_meta(tx, "revision", &doc.revision.0.to_string())?;
            set_meta(tx, "oldest", &doc.revision.0.to_string())?;
            Ok(true)
        })
    }

    pub fn audit(&self, entry: &AuditRow) -> StoreResult<()> {
        insert_audit(&*self.conn()?, entry)
    }

    pub fn queue_device_command(
        &self,
        device: &str,
        user: &str,
        name: &str,
        params_json: &str,
        audit: &AuditRow,
    ) -> StoreResult<i64> {
        self.write(|tx| {
            db(tx.execute(
                "INSERT INTO device_commands (at, device, user, name, params, status) VALUES (?1, ?2, ?3, ?4, ?5, 'queued')",
                params![now(), device, user, name, params_json],
            ))?;
            let id = tx.last_insert_rowid();
            insert_audit(tx, audit)?;
            Ok(id)
        })
    }

    pub fn create_session(&self, s: &SessionRow) -> StoreResult<()> {
        insert_session(&*self.conn()?, s)
    }

    pub fn end_session(&self, sid: &str, reason: &str) -> StoreResult<bool> {
        Ok(!end_sessions_where(&*self.conn()?, "id = ?1", sid, reason)?.is_empty())
    }

    pub fn end_expired_sessions(&self, at: i64) -> StoreResult<Vec<String>> {
        end_sessions_where(&*self.conn()?, "expires_at <= ?1", at, "expired")
    }

    pub fn rotate_key(&self, key_id: &str, secret: &[u8; 32]) -> StoreResult<()> {
        self.write(|tx| {
            let t = now();
            db(tx.execute("UPDATE keys SET retired_at = ?1 WHERE retired_at IS NULL", [t]))?;
            db(tx.execute(
                "INSERT INTO keys (key_id, secret, created_at) VALUES (?1, ?2, ?3)",
                params![key_id, crate::auth::hex(secret), t],
            ))?;
            Ok(())
        })
    }

    pub fn prune(&self, r: Retention) -> StoreResult<usize> {
        let t = now();
        self.write(|tx| {
            let revision: u64 = get_meta(tx, "revision")?.and_then(|s| s.parse().ok()).unwrap_or(0);
            let oldest: u64 = get_meta(tx, "oldest")?.and_then(|s| s.parse().ok()).unwrap_or(0);
            let cut = revision.saturating_sub(r.keep_changes);
            let mut n = 0;
            if cut > oldest {
                n += db(tx.execute("DELETE FROM changes WHERE revision <= ?1", [cut as i64]))?;
                set_meta(tx, "oldest", &cut.to_string())?;
            }
            n += db(tx.execute("DELETE FROM audit WHERE at < ?1", [t - r.audit_days * 86_400]))?;
            n += db(tx.execute("DELETE FROM outbox WHERE at < ?1", [t - r.outbox_days * 86_400]))?;
            n += db(tx.execute("DELETE FROM device_commands WHERE at < ?1", [t - r.command_days * 86_400]))?;
            n += db(tx.execute("DELETE FROM sessions WHERE COALESCE(ended_at, expires_at) < ?1", [t - 86_400]))?;
            n += db(tx.execute(
                "DELETE FROM invites WHERE COALESCE(accepted_at, revoked_at, expires_at) < ?1",
                [t - 86_400],
            ))?;
            Ok(n)
        })
    }

    pub fn revision(&self) -> StoreResult<Option<u64>> {
        self.read(|r| r.revision())
    }

    pub fn load(&self) -> StoreResult<SnapshotDoc> {
        self.read(|r| r.load())
    }

    pub fn inverses_between(&self, since: u64, upto: u64) -> StoreResult<Option<Vec<Op>>> {
        self.read(|r| r.inverses_between(since, upto))
    }

    pub fn deltas_between(&self, since: u64, upto: u64) -> StoreResult<Option<Vec<Delta>>> {
        self.read(|r| deltas_between(r.0, since, upto))
    }

    pub fn password_hash(&self, user: &str) -> StoreResult<Option<String>> {
        self.read(|r| r.password_hash(user))
    }

    pub fn live_sessions(&self, at: i64) -> StoreResult<Vec<SessionRow>> {
        self.read(|r| r.live_sessions(at))
    }

    pub fn live_session(&self, key: &str, by_id: bool, at: i64) -> StoreResult<Option<SessionRow>> {
        self.read(|r| r.live_session(key, by_id, at))
    }

    pub fn ended_since(&self, since: i64) -> StoreResult<Vec<String>> {
        self.read(|r| r.ended_since(since))
    }

    pub fn invite(&self, token_hash: &str) -> StoreResult<Option<InviteRow>> {
        self.read(|r| r.invite(token_hash))
    }

    pub fn claim_code_hash(&self, device: &str) -> StoreResult<Option<String>> {
        self.read(|r| r.claim_code_hash(device))
    }

    pub fn audit_page(&self, orgs: &[&str], before: Option<i64>, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        self.read(|r| r.audit_page(orgs, before, limit))
    }

    pub fn outbox(&self, orgs: &[&str]) -> StoreResult<Vec<Value>> {
        self.read(|r| r.outbox(orgs))
    }

    pub fn keys(&self) -> StoreResult<Vec<KeyRow>> {
        self.read(|r| r.keys())
    }
}

/// The chain's head inside a write transaction.
pub fn head(c: &Connection) -> StoreResult<u64> {
    Ok(get_meta(c, "revision")?.and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// Persists an accepted delta with its inverse, audit entry and effects, in the caller's
/// transaction. Returns the ids of the sessions it ended.
pub fn commit(
    tx: &Transaction<'_>,
    delta: &Delta,
    inverse: &[Op],
    audit: &AuditRow,
    fx: &Effects,
) -> StoreResult<Vec<String>> {
    // The audit entry names the org as it is before the change (a deleted org's last entry).
    insert_audit(tx, audit)?;
    write_ops(tx, &delta.ops)?;
    let inverse_json = serde_json::to_string(inverse).map_err(|e| StoreError::new(e.to_string()))?;
    db(tx.execute(
        "INSERT INTO changes (revision, at, delta, inverse) VALUES (?1, ?2, ?3, ?4)",
        params![delta.to.0 as i64, now(), delta.to_json(), inverse_json],
    ))?;
    set_meta(tx, "revision", &delta.to.0.to_string())?;
    if let Some(inv) = &fx.invite {
        db(tx.execute(
            "INSERT INTO invites (token_hash, user, org, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![inv.token_hash, inv.user, inv.org, now(), inv.expires_at],
        ))?;
        db(tx.execute(
            "INSERT INTO outbox (at, email, org, subject, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now(), inv.email, inv.org, "You are invited to fleetgate", inv.message],
        ))?;
    }
    if let Some(acc) = &fx.acceptance {
        db(tx.execute("UPDATE invites SET accepted_at = ?2 WHERE token_hash = ?1", params![acc.token_hash, now()]))?;
        db(tx.execute(
            "INSERT OR REPLACE INTO passwords (user, hash) VALUES (?1, ?2)",
            params![acc.user, acc.password_hash],
        ))?;
        insert_session(tx, &acc.session)?;
    }
    for device in &fx.void_claims {
        db(tx.execute("DELETE FROM claim_codes WHERE device = ?1", [device]))?;
    }
    for (user, org) in &fx.revoke_invites {
        db(tx.execute(
            "UPDATE invites SET revoked_at = ?3 WHERE user = ?1 AND (?2 = '' OR org = ?2) AND accepted_at IS NULL AND revoked_at IS NULL",
            params![user, org, now()],
        ))?;
    }
    let mut ended = Vec::new();
    for user in &fx.end_sessions_of {
        ended.extend(end_sessions_where(tx, "user = ?1", user, fx.end_reason)?);
    }
    Ok(ended)
}

/// The forward deltas after `since` up to `upto`, oldest first, or `None` when the log no
/// longer reaches back that far.
pub fn deltas_between(c: &Connection, since: u64, upto: u64) -> StoreResult<Option<Vec<Delta>>> {
    if since < Reads(c).oldest()? {
        return Ok(None);
    }
    let mut stmt =
        db(c.prepare_cached("SELECT delta FROM changes WHERE revision > ?1 AND revision <= ?2 ORDER BY revision"))?;
    let rows = db(stmt.query_map([since as i64, upto as i64], |r| r.get::<_, String>(0)))?;
    let mut out = Vec::new();
    for row in rows {
        match Delta::parse(&db(row)?) {
            Ok(d) => out.push(d),
            Err(e) => return bad("delta", e),
        }
    }
    Ok(Some(out))
}

/// Read queries on one connection.
struct Reads<'c>(&'c Connection);

impl Reads<'_> {
    /// The stored revision, or `None` for an empty store.
    pub fn revision(&self) -> StoreResult<Option<u64>> {
        Ok(get_meta(self.0, "revision")?.and_then(|s| s.parse().ok()))
    }

    /// Loads the stored world as a snapshot document.
    pub fn load(&self) -> StoreResult<SnapshotDoc> {
        let revision = self.revision()?.unwrap_or(0);
        let mut doc = SnapshotDoc::empty(revision);
        let c = self.0;
        let mut stmt = db(c.prepare("SELECT id, name, parent, plan, suspended, roles FROM orgs ORDER BY id"))?;
        let rows = db(stmt.query_map([], |r| {
            let roles: Option<String> = r.get(5)?;
            let mut v = serde_json::json!({"id": r.get::<_, String>(0)?, "name": r.get::<_, String>(1)?,
                "parent": r.get::<_, Option<String>>(2)?, "plan": r.get::<_, String>(3)?,
                "suspended": r.get::<_, i64>(4)? != 0});
            if let (Some(o), Some(t)) = (v.as_object_mut(), roles) {
                o.insert("roles".into(), serde_json::from_str::<Value>(&t).unwrap_or(Value::Null));
            }
            Ok(v)
        }))?;
        for row in rows {
            match serde_json::from_value::<OrgDoc>(db(row)?) {
                Ok(o) => doc.orgs.push(o),
                Err(e) => return bad("org", e),
            }
        }
        let mut stmt = db(c.prepare("SELECT id, email, name, status FROM users ORDER BY id"))?;
        let rows = db(stmt.query_map([], |r| {
            Ok(serde_json::json!({"id": r.get::<_, String>(0)?, "email": r.get::<_, String>(1)?,
                "name": r.get::<_, String>(2)?, "status": r.get::<_, String>(3)?}))
        }))?;
        for row in rows {
            match serde_json::from_value::<UserDoc>(db(row)?) {
                Ok(u) => doc.users.push(u),
                Err(e) => return bad("user", e),
            }
        }
        let mut stmt = db(c.prepare("SELECT user, org, role FROM memberships ORDER BY user, org"))?;
        let rows = db(stmt.query_map([], |r| {
            Ok(serde_json::json!({"user": r.get::<_, String>(0)?, "org": r.get::<_, String>(1)?, "role": r.get::<_, String>(2)?}))
        }))?;
        for row in rows {
            match serde_json::from_value::<MembershipDoc>(db(row)?) {
                Ok(m) => doc.memberships.push(m),
                Err(e) => return bad("membership", e),
            }
        }
        let mut stmt = db(c.prepare("SELECT id, name, org, owner FROM devices ORDER BY id"))?;
        let rows = db(stmt.query_map([], |r| {
            Ok(serde_json::json!({"id": r.get::<_, String>(0)?, "name": r.get::<_, String>(1)?,
                "org": r.get::<_, String>(2)?, "owner": r.get::<_, Option<String>>(3)?}))
        }))?;
        for row in rows {
            match serde_json::from_value::<DeviceDoc>(db(row)?) {
                Ok(d) => doc.devices.push(d),
                Err(e) => return bad("device", e),
            }
        }
        Ok(doc)
    }

    /// The oldest revision the change log reaches back to.
    pub fn oldest(&self) -> StoreResult<u64> {
        Ok(get_meta(self.0, "oldest")?.and_then(|s| s.parse().ok()).unwrap_or(0))
    }

    /// The inverse ops of the changes after `since` up to `upto`, newest first (to rebuild
    /// revision `since` from revision `upto`), or `None` when the log no longer reaches back.
    pub fn inverses_between(&self, since: u64, upto: u64) -> StoreResult<Option<Vec<Op>>> {
        if since < self.oldest()? {
            return Ok(None);
        }
        let mut stmt = db(self.0.prepare_cached(
            "SELECT inverse FROM changes WHERE revision > ?1 AND revision <= ?2 ORDER BY revision DESC",
        ))?;
        let rows = db(stmt.query_map([since as i64, upto as i64], |r| r.get::<_, String>(0)))?;
        let mut ops = Vec::new();
        for row in rows {
            match serde_json::from_str::<Vec<Op>>(&db(row)?) {
                Ok(batch) => ops.extend(batch),
                Err(e) => return bad("inverse", e),
            }
        }
        Ok(Some(ops))
    }

    /// The stored password hash of a user.
    pub fn password_hash(&self, user: &str) -> StoreResult<Option<String>> {
        db(self.0.query_row("SELECT hash FROM passwords WHERE user = ?1", [user], |r| r.get(0)).optional())
    }

    /// The live sessions (not ended, not expired at `at`).
    pub fn live_sessions(&self, at: i64) -> StoreResult<Vec<SessionRow>> {
        let mut stmt = db(self.0.prepare(
            "SELECT id, token_hash, user, expires_at FROM sessions WHERE ended_at IS NULL AND expires_at > ?1",
        ))?;
        let rows = db(stmt.query_map([at], |r| {
            Ok(SessionRow { id: r.get(0)?, token_hash: r.get(1)?, user: r.get(2)?, expires_at: r.get(3)? })
        }))?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_error)
    }

    /// The live session of a token hash (or of an id, `by_id`) at `at`.
    pub fn live_session(&self, key: &str, by_id: bool, at: i64) -> StoreResult<Option<SessionRow>> {
        let sql = if by_id {
            "SELECT id, token_hash, user, expires_at FROM sessions WHERE id = ?1 AND ended_at IS NULL AND expires_at > ?2"
        } else {
            "SELECT id, token_hash, user, expires_at FROM sessions WHERE token_hash = ?1 AND ended_at IS NULL AND expires_at > ?2"
        };
        db(self
            .0
            .query_row(sql, params![key, at], |r| {
                Ok(SessionRow { id: r.get(0)?, token_hash: r.get(1)?, user: r.get(2)?, expires_at: r.get(3)? })
            })
            .optional())
    }

    /// The sessions that ended at or after `since` (logout, suspension, removal; not expiry).
    pub fn ended_since(&self, since: i64) -> StoreResult<Vec<String>> {
        let mut stmt = db(self
            .0
            .prepare("SELECT id FROM sessions WHERE ended_at >= ?1 AND end_reason <> 'expired' ORDER BY ended_at"))?;
        let rows = db(stmt.query_map([since], |r| r.get(0)))?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_error)
    }

    /// The invitation of a token hash.
    pub fn invite(&self, token_hash: &str) -> StoreResult<Option<InviteRow>> {
        db(self
            .0
            .query_row(
                "SELECT user, org, expires_at, accepted_at IS NULL AND revoked_at IS NULL FROM invites WHERE token_hash = ?1",
                [token_hash],
                |r| Ok(InviteRow { user: r.get(0)?, org: r.get(1)?, expires_at: r.get(2)?, open: r.get(3)? }),
            )
            .optional())
    }

    /// The claim-code hash of a device.
    pub fn claim_code_hash(&self, device: &str) -> StoreResult<Option<String>> {
        db(self.0.query_row("SELECT code_hash FROM claim_codes WHERE device = ?1", [device], |r| r.get(0)).optional())
    }

    /// A page of audit entries about the given orgs (by their current identity), newest first,
    /// older than `before` when given.
    pub fn audit_page(&self, orgs: &[&str], before: Option<i64>, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        let list = serde_json::to_string(orgs).map_err(|e| StoreError::new(e.to_string()))?;
        let mut stmt = db(self.0.prepare_cached(
            "SELECT a.id, a.at, a.actor, a.action, u.org, a.target, a.outcome, a.detail
             FROM audit a JOIN org_uids u ON u.uid = a.org_uid
             WHERE u.live = 1 AND u.org IN (SELECT value FROM json_each(?1)) AND a.id < ?2
             ORDER BY a.id DESC LIMIT ?3",
        ))?;
        let rows = db(stmt.query_map(params![list, before.unwrap_or(i64::MAX), limit as i64], |r| {
            let detail: String = r.get(7)?;
            let row = AuditRow {
                actor: r.get(2)?,
                action: r.get(3)?,
                org: r.get(4)?,
                target: r.get(5)?,
                outcome: r.get(6)?,
                detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
            };
            Ok(AuditRecord { id: r.get(0)?, at: r.get(1)?, row })
        }))?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_error)
    }

    /// Outbox messages (invitations) of the given orgs, newest first.
    pub fn outbox(&self, orgs: &[&str]) -> StoreResult<Vec<Value>> {
        let list = serde_json::to_string(orgs).map_err(|e| StoreError::new(e.to_string()))?;
        let mut stmt = db(self.0.prepare(
            "SELECT id, at, email, org, subject, body FROM outbox WHERE org IN (SELECT value FROM json_each(?1))
             ORDER BY id DESC LIMIT 200",
        ))?;
        let rows = db(stmt.query_map([list], |r| {
            Ok(serde_json::json!({"id": r.get::<_, i64>(0)?, "at": r.get::<_, i64>(1)?, "email": r.get::<_, String>(2)?,
                "org": r.get::<_, String>(3)?, "subject": r.get::<_, String>(4)?, "body": r.get::<_, String>(5)?}))
        }))?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_error)
    }

    /// Every stored signing key, oldest first.
    pub fn keys(&self) -> StoreResult<Vec<KeyRow>> {
        let mut stmt = db(self
            .0
            .prepare_cached("SELECT key_id, secret, created_at, retired_at FROM keys ORDER BY created_at, key_id"))?;
        let rows = db(stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<i64>>(3)?))
        }))?;
        let mut out = Vec::new();
        for row in rows {
            let (key_id, secret, _created, retired_at) = db(row)?;
            let Some(secret) = crate::auth::unhex32(&secret) else {
                return bad("key", format!("`{key_id}` is not 32 hex bytes"));
            };
            out.push(KeyRow { key_id, secret, retired_at });
        }
        Ok(out)
    }
}

fn get_meta(c: &Connection, key: &str) -> StoreResult<Option<String>> {
    db(c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional())
}

fn set_meta(c: &Connection, key: &str, value: &str) -> StoreResult<()> {
    db(c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![key, value])).map(|_| ())
}

fn insert_session(c: &Connection, s: &SessionRow) -> StoreResult<()> {
    db(c.execute(
        "INSERT INTO sessions (id, token_hash, user, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![s.id, s.token_hash, s.user, now(), s.expires_at],
    ))
    .map(|_| ())
}

/// Ends the live sessions matching `cond` (with `?1` bound to `arg`); returns their ids.
fn end_sessions_where(c: &Connection, cond: &str, arg: impl rusqlite::ToSql, reason: &str) -> StoreResult<Vec<String>> {
    let ids: Vec<String> = {
        let mut stmt = db(c.prepare_cached(&format!("SELECT id FROM sessions WHERE ended_at IS NULL AND {cond}")))?;
        let rows = db(stmt.query_map([arg], |r| r.get(0)))?;
        rows.collect::<rusqlite::Result<_>>().map_err(store_error)?
    };
    for id in &ids {
        db(c.execute("UPDATE sessions SET ended_at = ?2, end_reason = ?3 WHERE id = ?1", params![id, now(), reason]))?;
    }
    Ok(ids)
}

pub fn insert_audit(c: &Connection, e: &AuditRow) -> StoreResult<()> {
    let uid: Option<i64> = match &e.org {
        Some(org) => {
            db(c.query_row("SELECT uid FROM org_uids WHERE org = ?1 AND live = 1", [org], |r| r.get(0)).optional())?
        }
        None => None,
    };
    db(c.execute(
        "INSERT INTO audit (at, actor, action, org_uid, target, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![now(), e.actor, e.action, uid, e.target, e.outcome, e.detail.to_string()],
    ))
    .map(|_| ())
}

/// Writes delta ops to the entity tables, giving each newly created org a fresh identity.
fn write_ops(tx: &Transaction<'_>, ops: &[Op]) -> StoreResult<()> {
    for op in ops {
        match op {
            Op::PutOrg { org } => {
                let roles = org.roles.as_ref().map(|r| serde_json::to_string(r).unwrap_or_default());
                db(tx.execute(
                    "INSERT OR REPLACE INTO orgs (id, name, parent, plan, suspended, roles) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![org.id.as_str(), org.name, org.parent.as_ref().map(|p| p.as_str()), plan_str(org.plan),
                        org.suspended as i64, roles],
                ))?;
                db(tx.execute(
                    "INSERT INTO org_uids (org, live) SELECT ?1, 1 WHERE NOT EXISTS (SELECT 1 FROM org_uids WHERE org = ?1 AND live = 1)",
                    [org.id.as_str()],
                ))?;
            }
            Op::PutUser { user } => {
                db(tx.execute(
                    "INSERT OR REPLACE INTO users (id, email, name, status) VALUES (?1, ?2, ?3, ?4)",
                    params![user.id.as_str(), user.email, user.name, status_str(user.status)],
                ))?;
            }
            Op::PutMembership { membership: m } => {
                db(tx.execute(
                    "INSERT OR REPLACE INTO memberships (user, org, role) VALUES (?1, ?2, ?3)",
                    params![m.user.as_str(), m.org.as_str(), m.role.as_str()],
                ))?;
            }
            Op::PutDevice { device: d } => {
                db(tx.execute(
                    "INSERT OR REPLACE INTO devices (id, name, org, owner) VALUES (?1, ?2, ?3, ?4)",
                    params![d.id.as_str(), d.name, d.org.as_str(), d.owner.as_ref().map(|o| o.as_str())],
                ))?;
            }
            Op::RemoveOrg { id } => {
                db(tx.execute("DELETE FROM orgs WHERE id = ?1", [id.as_str()]))?;
                db(tx.execute("UPDATE org_uids SET live = 0 WHERE org = ?1", [id.as_str()]))?;
            }
            Op::RemoveUser { id } => {
                db(tx.execute("DELETE FROM users WHERE id = ?1", [id.as_str()]))?;
                db(tx.execute("DELETE FROM passwords WHERE user = ?1", [id.as_str()]))?;
            }
            Op::RemoveDevice { id } => {
                db(tx.execute("DELETE FROM devices WHERE id = ?1", [id.as_str()]))?;
            }
            Op::RemoveMembership { user, org } => {
                db(tx.execute("DELETE FROM memberships WHERE user = ?1 AND org = ?2", [user.as_str(), org.as_str()]))?;
            }
        }
    }
    Ok(())
}
