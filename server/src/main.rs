//! `fleetgate-server`: the thin authority of SPEC §7. It stores the state in SQLite, serves each
//! user the projection of exactly what they may see, and re-checks every command with the same
//! engine the browser and the edge run.

mod api;
mod auth;
mod demo;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;
use fleetgate::{Engine, SnapshotDoc};
use serde::Deserialize;
use tower_http::services::ServeDir;

use crate::store::Store;

/// The fleetgate server.
#[derive(Parser, Debug)]
#[command(name = "fleetgate-server", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The SQLite database file.
    #[arg(long, default_value = "./fleetgate.db")]
    db: PathBuf,
    /// Load a world `{"snapshot", "passwords", "claimCodes"?}`, replacing the stored one.
    #[arg(long, conflicts_with = "demo")]
    seed: Option<PathBuf>,
    /// Seed the bundled demo world (when the database is empty) and show demo logins.
    #[arg(long)]
    demo: bool,
    /// The dashboard's files.
    #[arg(long, default_value = "www")]
    www: PathBuf,
    /// The built wasm package (served under /pkg).
    #[arg(long, default_value = "pkg")]
    pkg: PathBuf,
    /// fsync every commit (survives power loss, not only a killed process).
    #[arg(long)]
    sync_full: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Seed {
    snapshot: serde_json::Value,
    #[serde(default)]
    passwords: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    claim_codes: std::collections::BTreeMap<String, String>,
}

fn seed_store(store: &mut Store, seed: serde_json::Value) -> Result<(), String> {
    let seed: Seed = serde_json::from_value(seed).map_err(|e| format!("seed: {e}"))?;
    let doc = SnapshotDoc::parse(&seed.snapshot.to_string()).map_err(|e| format!("seed snapshot: {e}"))?;
    let engine = Engine::from_doc(doc.clone()).map_err(|e| format!("seed snapshot: {e}"))?;
    if doc.viewer.is_some() {
        return Err("seed snapshot must be a full snapshot (viewer: null)".into());
    }
    // Hash passwords on all cores: Argon2id is deliberately slow.
    let pairs: Vec<(String, String)> = seed.passwords.into_iter().collect();
    for (user, _) in &pairs {
        if engine.user_doc_by_id(user).is_none() {
            return Err(format!("seed: password for unknown user `{user}`"));
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = pairs.len().div_ceil(threads).max(1);
    let hashed: Vec<(String, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = pairs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter().map(|(u, p)| auth::hash_password(p).map(|h| (u.clone(), h))).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect::<Result<Vec<_>, String>>()
    })?;
    let claims: Vec<(String, String)> = seed.claim_codes.iter().map(|(d, c)| (d.clone(), auth::digest(c))).collect();
    store.seed(&doc, &hashed, &claims)
}

fn run(args: Args) -> Result<(), String> {
    let mut store = Store::open(&args.db, args.sync_full)?;
    if let Some(path) = &args.seed {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("seed {}: {e}", path.display()))?;
        seed_store(&mut store, value)?;
        tracing::info!("seeded the world from {}", path.display());
    } else if args.demo && store.revision()?.is_none() {
        seed_store(&mut store, demo::seed())?;
        tracing::info!("seeded the demo world");
    }
    let key = match store.meta("signing_key")?.and_then(|h| auth::unhex32(&h)) {
        Some(k) => k,
        None => {
            let k = auth::random_key()?;
            store.set_meta("signing_key", &auth::hex(&k))?;
            k
        }
    };
    let engine = Engine::from_doc(store.load()?).map_err(|e| format!("stored world: {e}"))?;
    let (orgs, users, _, devices) = engine.counts();
    tracing::info!("revision {}: {orgs} orgs, {users} users, {devices} devices", engine.revision());
    let state = Arc::new(api::Inner::new(engine, store, key, args.demo));
    let app = Router::new()
        .route("/api/login", post(api::login))
        .route("/api/logout", post(api::logout))
        .route("/api/me", get(api::me))
        .route("/api/snapshot", get(api::snapshot))
        .route("/api/deltas", get(api::deltas))
        .route("/api/events", get(api::events))
        .route("/api/devices", get(api::devices))
        .route("/api/devices/{id}/commands", post(api::device_command))
        .route("/api/commands", post(api::command))
        .route("/api/invites/accept", post(api::accept_invite))
        .route("/api/audit", get(api::audit))
        .route("/api/outbox", get(api::outbox))
        .route("/api/demo", get(api::demo_info))
        .route("/.well-known/fleetgate-keys", get(api::keys))
        .route("/healthz", get(api::healthz))
        .route("/api/{*rest}", get(api::not_found).post(api::not_found))
        .nest_service("/pkg", ServeDir::new(&args.pkg))
        .fallback_service(ServeDir::new(&args.www))
        .layer(DefaultBodyLimit::max(api::MAX_BODY))
        .layer(axum::middleware::from_fn(api::limit_body))
        .with_state(state);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!("fleetgate-server listening on http://{addr}");
        println!("fleetgate-server listening on http://{addr}");
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| e.to_string())
    })
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetgate-server: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
