//! The SQLite store: the state (orgs, users, memberships, devices), credentials, sessions,
//! invites, claim codes, queued device commands, the audit log and the change log of deltas.
//! Every accepted change is one transaction.

use std::path::Path;

use fleetgate::delta::Op;
use fleetgate::snapshot::{DeviceDoc, MembershipDoc, OrgDoc, SnapshotDoc, UserDoc};
use fleetgate::Delta;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;

/// A store error: a message for the log; the client gets a 500 or 409.
pub type StoreResult<T> = Result<T, String>;

fn db<T>(r: rusqlite::Result<T>) -> StoreResult<T> {
    r.map_err(|e| format!("database: {e}"))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL, parent TEXT, plan TEXT NOT NULL,
  suspended INTEGER NOT NULL, roles TEXT);
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memberships (user TEXT NOT NULL, org TEXT NOT NULL, role TEXT NOT NULL, PRIMARY KEY (user, org));
CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, name TEXT NOT NULL, org TEXT NOT NULL, owner TEXT);
CREATE TABLE IF NOT EXISTS passwords (user TEXT PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (token_hash TEXT PRIMARY KEY, user TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS invites (token_hash TEXT PRIMARY KEY, user TEXT NOT NULL, org TEXT NOT NULL,
  created_at INTEGER NOT NULL, accepted_at INTEGER);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, email TEXT NOT NULL,
  org TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claim_codes (device TEXT PRIMARY KEY, code_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS device_commands (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL,
  device TEXT NOT NULL, user TEXT NOT NULL, name TEXT NOT NULL, params TEXT NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, org TEXT, target TEXT, outcome TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_org ON audit (org);
CREATE TABLE IF NOT EXISTS changes (revision INTEGER PRIMARY KEY, at INTEGER NOT NULL, delta TEXT NOT NULL,
  inverse TEXT NOT NULL);
";

/// One audit entry to write.
pub struct AuditEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub org: Option<&'a str>,
    pub target: Option<&'a str>,
    pub outcome: &'a str,
    pub detail: Value,
}

/// The store: one SQLite connection (WAL).
pub struct Store {
    conn: Connection,
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

impl Store {
    /// Opens (creating if needed) the database file.
    pub fn open(path: &Path, full_sync: bool) -> StoreResult<Self> {
        let conn = db(Connection::open(path))?;
        db(conn.pragma_update(None, "journal_mode", "WAL"))?;
        db(conn.pragma_update(None, "synchronous", if full_sync { "FULL" } else { "NORMAL" }))?;
        db(conn.pragma_update(None, "foreign_keys", "OFF"))?;
        db(conn.busy_timeout(std::time::Duration::from_secs(5)))?;
        db(conn.execute_batch(SCHEMA))?;
        Ok(Self { conn })
    }

    /// The stored revision, or `None` for an empty store.
    pub fn revision(&self) -> StoreResult<Option<u64>> {
        let v: Option<String> =
            db(self.conn.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| r.get(0)).optional())?;
        Ok(v.and_then(|s| s.parse().ok()))
    }

    /// A meta value.
    pub fn meta(&self, key: &str) -> StoreResult<Option<String>> {
        db(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional())
    }

    /// Sets a meta value.
    pub fn set_meta(&self, key: &str, value: &str) -> StoreResult<()> {
        db(self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![key, value]))
            .map(|_| ())
    }

    /// Replaces the whole world with a seed: the snapshot, password hashes and claim-code hashes.
    pub fn seed(
        &mut self,
        doc: &SnapshotDoc,
        passwords: &[(String, String)],
        claims: &[(String, String)],
    ) -> StoreResult<()> {
        let tx = db(self.conn.transaction())?;
        for t in [
            "orgs",
            "users",
            "memberships",
            "devices",
            "passwords",
            "sessions",
            "invites",
            "outbox",
            "claim_codes",
            "device_commands",
            "audit",
            "changes",
        ] {
            db(tx.execute(&format!("DELETE FROM {t}"), []))?;
        }
        let ops: Vec<Op> = doc
            .orgs
            .iter()
            .map(|o| Op::PutOrg { org: o.clone() })
            .chain(doc.users.iter().map(|u| Op::PutUser { user: u.clone() }))
            .chain(doc.memberships.iter().map(|m| Op::PutMembership { membership: m.clone() }))
            .chain(doc.devices.iter().map(|d| Op::PutDevice { device: d.clone() }))
            .collect();
        write_ops(&tx, &ops)?;
        for (user, hash) in passwords {
            db(tx.execute("INSERT OR REPLACE INTO passwords (user, hash) VALUES (?1, ?2)", params![user, hash]))?;
        }
        for (device, hash) in claims {
            db(tx.execute(
                "INSERT OR REPLACE INTO claim_codes (device, code_hash) VALUES (?1, ?2)",
                params![device, hash],
            ))?;
        }
        db(tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('revision', ?1)",
            [doc.revision.0.to_string()],
        ))?;
        db(tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('oldest', ?1)", [doc.revision.0.to_string()]))?;
        db(tx.commit())
    }

    /// Loads the stored world as a snapshot document.
    pub fn load(&self) -> StoreResult<SnapshotDoc> {
        let revision = self.revision()?.unwrap_or(0);
        let mut doc = SnapshotDoc::empty(revision);
        let c = &self.conn;
        let mut stmt = db(c.prepare("SELECT id, name, parent, plan, suspended, roles FROM orgs"))?;
        let rows = db(stmt.query_map([], |r| {
            let roles: Option<String> = r.get(5)?;
            Ok(serde_json::json!({"id": r.get::<_, String>(0)?, "name": r.get::<_, String>(1)?,
                "parent": r.get::<_, Option<String>>(2)?, "plan": r.get::<_, String>(3)?,
                "suspended": r.get::<_, i64>(4)? != 0,
                "roles": roles.and_then(|t| serde_json::from_str::<Value>(&t).ok())}))
        }))?;
        for row in rows {
            let mut v = db(row)?;
            if let Some(o) = v.as_object_mut() {
                if o.get("roles").is_some_and(Value::is_null) {
                    o.remove("roles");
                }
            }
            doc.orgs.push(serde_json::from_value::<OrgDoc>(v).map_err(|e| format!("stored org: {e}"))?);
        }
        let mut stmt = db(c.prepare("SELECT id, email, name, status FROM users"))?;
        let rows = db(stmt.query_map([], |r| {
            Ok(serde_json::json!({"id": r.get::<_, String>(0)?, "email": r.get::<_, String>(1)?,
                "name": r.get::<_, String>(2)?, "status": r.get::<_, String>(3)?}))
        }))?;
        for row in rows {
            doc.users.push(serde_json::from_value::<UserDoc>(db(row)?).map_err(|e| format!("stored user: {e}"))?);
        }
        let mut stmt = db(c.prepare("SELECT user, org, role FROM memberships"))?;
        let rows = db(stmt.query_map([], |r| {
            Ok(serde_json::json!({"user": r.get::<_, String>(0)?, "org": r.get::<_, String>(1)?, "role": r.get::<_, String>(2)?}))
        }))?;
        for row in rows {
            doc.memberships.push(
                serde_json::from_value::<MembershipDoc>(db(row)?).map_err(|e| format!("stored membership: {e}"))?,
            );
        }
        let mut stmt = db(c.prepare("SELECT id, name, org, owner FROM devices"))?;
        let rows = db(stmt.query_map([], |r| {
            Ok(serde_json::json!({"id": r.get::<_, String>(0)?, "name": r.get::<_, String>(1)?,
                "org": r.get::<_, String>(2)?, "owner": r.get::<_, Option<String>>(3)?}))
        }))?;
        for row in rows {
            doc.devices.push(serde_json::from_value::<DeviceDoc>(db(row)?).map_err(|e| format!("stored device: {e}"))?);
        }
        Ok(doc)
    }

    /// Persists an accepted delta, its inverse, the audit entry and the new revision: one transaction.
    pub fn commit_delta(
        &mut self,
        delta: &Delta,
        inverse: &[Op],
        audit: &AuditEntry<'_>,
        extra: impl FnOnce(&Transaction<'_>) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let tx = db(self.conn.transaction())?;
        write_ops(&tx, &delta.ops)?;
        let inverse_json = serde_json::to_string(inverse).map_err(|e| e.to_string())?;
        db(tx.execute(
            "INSERT INTO changes (revision, at, delta, inverse) VALUES (?1, ?2, ?3, ?4)",
            params![delta.to.0 as i64, now(), delta.to_json(), inverse_json],
        ))?;
        db(tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('revision', ?1)", [delta.to.0.to_string()]))?;
        insert_audit(&tx, audit)?;
        extra(&tx)?;
        db(tx.commit())
    }

    /// The inverse ops of the changes after `since`, newest first (to rebuild revision `since`),
    /// or `None` when the log no longer reaches back that far.
    pub fn inverses_since(&self, since: u64) -> StoreResult<Option<Vec<Op>>> {
        let oldest: u64 = self.meta("oldest")?.and_then(|s| s.parse().ok()).unwrap_or(0);
        if since < oldest {
            return Ok(None);
        }
        let mut stmt = db(self.conn.prepare("SELECT inverse FROM changes WHERE revision > ?1 ORDER BY revision DESC"))?;
        let rows = db(stmt.query_map([since as i64], |r| r.get::<_, String>(0)))?;
        let mut ops = Vec::new();
        for row in rows {
            let batch: Vec<Op> = serde_json::from_str(&db(row)?).map_err(|e| format!("stored inverse: {e}"))?;
            ops.extend(batch);
        }
        Ok(Some(ops))
    }

    /// Drops change-log entries beyond the newest `keep`.
    pub fn prune_changes(&self, keep: u64) -> StoreResult<()> {
        let Some(rev) = self.revision()? else { return Ok(()) };
        let cut = rev.saturating_sub(keep);
        let oldest: u64 = self.meta("oldest")?.and_then(|s| s.parse().ok()).unwrap_or(0);
        if cut > oldest {
            db(self.conn.execute("DELETE FROM changes WHERE revision <= ?1", [cut as i64]))?;
            self.set_meta("oldest", &cut.to_string())?;
        }
        Ok(())
    }

    /// The stored password hash of a user.
    pub fn password_hash(&self, user: &str) -> StoreResult<Option<String>> {
        db(self.conn.query_row("SELECT hash FROM passwords WHERE user = ?1", [user], |r| r.get(0)).optional())
    }

    /// Stores a session (by token hash).
    pub fn create_session(&self, token_hash: &str, user: &str, expires_at: i64) -> StoreResult<()> {
        db(self.conn.execute(
            "INSERT INTO sessions (token_hash, user, expires_at) VALUES (?1, ?2, ?3)",
            params![token_hash, user, expires_at],
        ))
        .map(|_| ())
    }

    /// The session of a token hash: (user, expires_at).
    pub fn session(&self, token_hash: &str) -> StoreResult<Option<(String, i64)>> {
        db(self
            .conn
            .query_row("SELECT user, expires_at FROM sessions WHERE token_hash = ?1", [token_hash], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional())
    }

    /// Sets a session's expiry (tests use it to age a session).
    pub fn expire_session(&self, token_hash: &str, at: i64) -> StoreResult<()> {
        db(self.conn.execute("UPDATE sessions SET expires_at = ?2 WHERE token_hash = ?1", params![token_hash, at]))
            .map(|_| ())
    }

    /// The pending invite of a token hash: (user, org).
    pub fn invite(&self, token_hash: &str) -> StoreResult<Option<(String, String)>> {
        db(self
            .conn
            .query_row(
                "SELECT user, org FROM invites WHERE token_hash = ?1 AND accepted_at IS NULL",
                [token_hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional())
    }

    /// The claim-code hash of a device.
    pub fn claim_code_hash(&self, device: &str) -> StoreResult<Option<String>> {
        db(self
            .conn
            .query_row("SELECT code_hash FROM claim_codes WHERE device = ?1", [device], |r| r.get(0))
            .optional())
    }

    /// Queues a device command and audits it, in one transaction; returns its id.
    pub fn queue_device_command(
        &mut self,
        device: &str,
        user: &str,
        name: &str,
        params_json: &str,
        audit: &AuditEntry<'_>,
    ) -> StoreResult<i64> {
        let tx = db(self.conn.transaction())?;
        db(tx.execute(
            "INSERT INTO device_commands (at, device, user, name, params, status) VALUES (?1, ?2, ?3, ?4, ?5, 'queued')",
            params![now(), device, user, name, params_json],
        ))?;
        let id = tx.last_insert_rowid();
        insert_audit(&tx, audit)?;
        db(tx.commit())?;
        Ok(id)
    }

    /// Writes an audit entry on its own.
    pub fn audit(&self, entry: &AuditEntry<'_>) -> StoreResult<()> {
        insert_audit(&self.conn, entry)
    }

    /// Audit entries, newest first, whose org passes `visible`.
    pub fn audit_entries(&self, limit: usize, visible: impl Fn(Option<&str>) -> bool) -> StoreResult<Vec<Value>> {
        let sql = "SELECT id, at, actor, action, org, target, outcome, detail FROM audit ORDER BY id DESC";
        self.rows_json(sql, limit, |row| visible(row.get("org").and_then(Value::as_str)))
    }

    /// Outbox messages (invite links) for orgs that pass `visible`, newest first.
    pub fn outbox(&self, visible: impl Fn(&str) -> bool) -> StoreResult<Vec<Value>> {
        let sql = "SELECT id, at, email, org, subject, body FROM outbox ORDER BY id DESC";
        self.rows_json(sql, 200, |row| row.get("org").and_then(Value::as_str).is_some_and(&visible))
    }

    /// Rows of a query as JSON objects keyed by column (a `detail` column holds JSON text),
    /// keeping the first `limit` that pass `keep`.
    fn rows_json(
        &self,
        sql: &str,
        limit: usize,
        keep: impl Fn(&serde_json::Map<String, Value>) -> bool,
    ) -> StoreResult<Vec<Value>> {
        use rusqlite::types::ValueRef;
        let mut stmt = db(self.conn.prepare(sql))?;
        let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
        let mut rows = db(stmt.query([]))?;
        let mut out = Vec::new();
        while let Some(row) = db(rows.next())? {
            let mut obj = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let v = match db(row.get_ref(i))? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::from(n),
                    ValueRef::Real(f) => Value::from(f),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        let text = String::from_utf8_lossy(t).into_owned();
                        if name == "detail" {
                            serde_json::from_str(&text).unwrap_or(Value::Null)
                        } else {
                            Value::String(text)
                        }
                    }
                };
                obj.insert(name.clone(), v);
            }
            if keep(&obj) {
                out.push(Value::Object(obj));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn insert_audit(c: &Connection, e: &AuditEntry<'_>) -> StoreResult<()> {
    db(c.execute(
        "INSERT INTO audit (at, actor, action, org, target, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![now(), e.actor, e.action, e.org, e.target, e.outcome, e.detail.to_string()],
    ))
    .map(|_| ())
}

/// Writes delta ops to the entity tables.
fn write_ops(tx: &Connection, ops: &[Op]) -> StoreResult<()> {
    for op in ops {
        match op {
            Op::PutOrg { org } => {
                let roles = org.roles.as_ref().map(|r| serde_json::to_string(r).unwrap_or_default());
                db(tx.execute(
                    "INSERT OR REPLACE INTO orgs (id, name, parent, plan, suspended, roles) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![org.id.as_str(), org.name, org.parent.as_ref().map(|p| p.as_str()), plan_str(org.plan),
                        org.suspended as i64, roles],
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
            }
            Op::RemoveUser { id } => {
                db(tx.execute("DELETE FROM users WHERE id = ?1", [id.as_str()]))?;
            }
            Op::RemoveDevice { id } => {
                db(tx.execute("DELETE FROM devices WHERE id = ?1", [id.as_str()]))?;
                db(tx.execute("DELETE FROM claim_codes WHERE device = ?1", [id.as_str()]))?;
            }
            Op::RemoveMembership { user, org } => {
                db(tx.execute("DELETE FROM memberships WHERE user = ?1 AND org = ?2", [user.as_str(), org.as_str()]))?;
            }
        }
    }
    Ok(())
}
