//! The test harness shared by the server's HTTP suites: a server process on a random port with
//! its own database, JSON helpers, vector worlds.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

pub const PASSWORD: &str = "test-password-1";

/// The test PostgreSQL cluster (`scripts/postgres.sh` sets it): `postgres://user@host:port`.
/// When set, every suite's servers keep their state in PostgreSQL (a database each).
pub fn pg_base() -> Option<String> {
    std::env::var("FLEETGATE_TEST_PG").ok().filter(|s| !s.is_empty())
}

/// Creates a fresh database on the test cluster; returns its URL.
pub fn pg_database(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let base = pg_base().expect("FLEETGATE_TEST_PG (run through scripts/postgres.sh)");
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!("fg_{}_{}_{n}", tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_"), std::process::id());
    let mut admin = postgres::Client::connect(&format!("{base}/postgres"), postgres::NoTls).unwrap();
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    format!("{base}/{name}")
}

/// A server's store, for suites that look inside it.
pub enum Store {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Store {
    /// A single integer from `sql` (written to run on both: `CAST(… AS BIGINT)`).
    pub fn query_i64(&self, sql: &str) -> i64 {
        match self {
            Store::Sqlite(path) => rusqlite::Connection::open(path).unwrap().query_row(sql, [], |r| r.get(0)).unwrap(),
            Store::Postgres(url) => {
                postgres::Client::connect(url, postgres::NoTls).unwrap().query_one(sql, &[]).unwrap().get(0)
            }
        }
    }

    /// Every byte the store keeps (the SQLite file and its WAL; every PostgreSQL row as text).
    pub fn all_bytes(&self) -> Vec<u8> {
        match self {
            Store::Sqlite(path) => {
                let mut all = std::fs::read(path).unwrap_or_default();
                all.extend(std::fs::read(format!("{}-wal", path.display())).unwrap_or_default());
                all
            }
            Store::Postgres(url) => {
                let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
                let tables: Vec<String> = c
                    .query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", &[])
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let mut all = Vec::new();
                for t in tables {
                    for row in c.query(&format!("SELECT t::text FROM {t} t"), &[]).unwrap() {
                        all.extend(row.get::<_, String>(0).into_bytes());
                    }
                }
                all
            }
        }
    }

    /// Holds the change log locked from another connection (writes to it wait, then fail)
    /// until the returned guard is dropped.
    pub fn lock_changes(&self) -> Box<dyn std::any::Any> {
        match self {
            Store::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                Box::new(conn)
            }
            Store::Postgres(url) => {
                let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
                c.batch_execute("BEGIN; LOCK TABLE changes IN EXCLUSIVE MODE").unwrap();
                Box::new(c)
            }
        }
    }
}

/// A server process on a random port, with its own database.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub db: std::path::PathBuf,
    pub dir: TempDir,
    /// Extra flags, kept for restarts.
    pub args: Vec<String>,
}

pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("fleetgate-http-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

impl Server {
    pub fn start(tag: &str, seed: Option<&Value>) -> Server {
        Server::start_with(tag, seed, &[])
    }

    /// Starts with extra flags (kept for restarts).
    pub fn start_with(tag: &str, seed: Option<&Value>, extra: &[&str]) -> Server {
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if pg_base().is_some() && !extra.iter().any(|a| a == "--database-url") {
            extra.extend(["--database-url".into(), pg_database(tag)]);
        }
        let dir = temp_dir(tag);
        let db = dir.0.join("fleetgate.db");
        let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".into(), "--db".into(), db.display().to_string()];
        if let Some(seed) = seed {
            let path = dir.0.join("seed.json");
            std::fs::write(&path, seed.to_string()).unwrap();
            args.extend(["--seed".into(), path.display().to_string()]);
        }
        args.extend(extra.iter().cloned());
        let (child, base) = spawn(&args);
        Server { child, base, db, dir, args: extra }
    }

    /// The server's store.
    pub fn store(&self) -> Store {
        match self.args.iter().position(|a| a == "--database-url").and_then(|i| self.args.get(i + 1)) {
            Some(url) => Store::Postgres(url.clone()),
            None => Store::Sqlite(self.db.clone()),
        }
    }

    /// Restarts on the same database (no seed), after a kill.
    pub fn restart(&mut self) {
        let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".into(), "--db".into(), self.db.display().to_string()];
        args.extend(self.args.iter().cloned());
        let (child, base) = spawn(&args);
        self.child = child;
        self.base = base;
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn login(&self, user: &str) -> String {
        let res = ureq::post(&self.url("/api/login"))
            .send_json(json!({"email": format!("{user}@example.test"), "password": PASSWORD}))
            .unwrap_or_else(|e| panic!("login {user}: {e}"));
        res.into_json::<Value>().unwrap()["token"].as_str().unwrap().to_owned()
    }

    /// Signs in, or `None` when the server refuses.
    pub fn try_login(&self, user: &str) -> Option<String> {
        let res = ureq::post(&self.url("/api/login"))
            .send_json(json!({"email": format!("{user}@example.test"), "password": PASSWORD}))
            .ok()?;
        Some(res.into_json::<Value>().ok()?["token"].as_str()?.to_owned())
    }

    pub fn get(&self, token: &str, path: &str) -> (u16, Value) {
        status_json(ureq::get(&self.url(path)).set("Authorization", &format!("Bearer {token}")).call())
    }

    pub fn post(&self, token: &str, path: &str, body: &Value) -> (u16, Value) {
        status_json(
            ureq::post(&self.url(path)).set("Authorization", &format!("Bearer {token}")).send_json(body.clone()),
        )
    }

    /// The revision `/healthz` reports (also while a replica is catching up: 503).
    pub fn revision(&self) -> u64 {
        let (_, v) = status_json(ureq::get(&self.url("/healthz")).call());
        v["revision"].as_u64().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn spawn(args: &[String]) -> (Child, String) {
    // The log goes next to the database, so a suite can check what the server wrote.
    let db = args.iter().skip_while(|a| *a != "--db").nth(1).cloned().unwrap_or_default();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(format!("{db}.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetgate-server"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("fleetgate-server listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let base = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| {
        panic!("server did not start: {}", std::fs::read_to_string(format!("{db}.log")).unwrap_or_default())
    });
    (child, base)
}

pub fn status_json(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    match r {
        Ok(res) => {
            let status = res.status();
            let text = res.into_string().unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        Err(ureq::Error::Status(code, res)) => (code, res.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("transport error: {e}"),
    }
}

pub fn vector(name: &str) -> Value {
    let path = format!("{}/../tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A seed for a vector world: every active user gets the test password.
pub fn seed_of(snapshot: &Value) -> Value {
    let passwords: serde_json::Map<String, Value> = snapshot["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["status"] == "active")
        .map(|u| (u["id"].as_str().unwrap().to_owned(), json!(PASSWORD)))
        .collect();
    let claims: serde_json::Map<String, Value> = [("eu-demo", "123456"), ("lab-1", "777777")]
        .into_iter()
        .filter(|(d, _)| snapshot["devices"].as_array().is_some_and(|l| l.iter().any(|x| x["id"] == *d)))
        .map(|(d, c)| (d.to_owned(), json!(c)))
        .collect();
    json!({"snapshot": snapshot, "passwords": passwords, "claimCodes": claims})
}

pub fn active_users(snapshot: &Value) -> Vec<String> {
    snapshot["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["status"] == "active")
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}
