//! `fleetgate-server`: the thin authority of SPEC §7. It stores the state in SQLite, serves each
//! user the projection of exactly what they may see, re-checks every command with the same
//! engine the browser and the edge run, and feeds edge gateways signed snapshots and deltas.

mod api;
mod auth;
mod demo;
mod edge;
mod error;
mod extract;
mod replica;
mod state;
mod store;
mod throttle;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::{Parser, Subcommand};
use fleetgate::{Engine, SnapshotDoc};
use serde::Deserialize;
use tower_http::services::ServeDir;

use crate::error::ApiError;
use crate::state::{key_id_of, App, AppState, Config};
use crate::store::{Db, Retention};

/// The fleetgate server.
#[derive(Parser, Debug)]
#[command(name = "fleetgate-server", version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Make a new active signing key in the store (a running server picks it up within a
    /// second); the previous key stays published while its signatures may still be valid.
    RotateKey {
        /// The SQLite database file.
        #[arg(long, default_value = "./fleetgate.db")]
        db: PathBuf,
        /// The PostgreSQL store instead (`postgres://…`).
        #[arg(long)]
        database_url: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The SQLite database file.
    #[arg(long, default_value = "./fleetgate.db")]
    db: PathBuf,
    /// Keep the state in PostgreSQL instead (`postgres://user@host:port/db`), shared by every
    /// replica started with the same URL (SPEC §9). `--demo` seeds it only when it is empty.
    #[arg(long)]
    database_url: Option<String>,
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
    /// Edge credentials: a file with one token per line (`#` starts a comment); kept hashed.
    #[arg(long)]
    edge_token_file: Option<PathBuf>,
    /// How long a session lasts, seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    session_seconds: i64,
    /// Validity of signed snapshots and deltas, seconds.
    #[arg(long, default_value_t = 300)]
    signed_seconds: i64,
    /// How often edge event streams get a signed renewal, seconds.
    #[arg(long, default_value_t = 30)]
    renew_seconds: u64,
    /// Lifetime of access tokens, seconds (at most 300).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(i64).range(1..=300))]
    token_seconds: i64,
    /// How long an invitation stays valid, days.
    #[arg(long, default_value_t = 7)]
    invite_days: i64,
    /// Change-log entries kept for `/api/deltas`, resumed streams and edges.
    #[arg(long, default_value_t = 10_000)]
    keep_changes: u64,
    /// Days audit entries are kept.
    #[arg(long, default_value_t = 90)]
    audit_days: i64,
    /// Days outbox messages are kept.
    #[arg(long, default_value_t = 30)]
    outbox_days: i64,
    /// Days queued device commands are kept.
    #[arg(long, default_value_t = 30)]
    command_days: i64,
    /// Most connections served at once (more wait to be accepted).
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// A proxy (e.g. an edge gateway) whose `X-Forwarded-For` names the client address that
    /// login throttling counts; repeat for several. Other peers' `X-Forwarded-For` is ignored.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Seconds a request may take to be answered (event streams: until their headers).
    #[arg(long, default_value_t = 15)]
    request_timeout: u64,
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

/// Hashes secrets with Argon2id on all cores.
fn hash_all(pairs: Vec<(String, String)>) -> Result<Vec<(String, String)>, String> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = pairs.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = pairs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter().map(|(u, p)| auth::hash_password(p).map(|h| (u.clone(), h))).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect::<Result<Vec<_>, String>>()
    })
}

/// Seeds the store; with `only_if_empty`, a store with a world is left alone. Returns whether
/// it seeded.
fn seed_store(store: &Db, seed: serde_json::Value, only_if_empty: bool) -> Result<bool, String> {
    let seed: Seed = serde_json::from_value(seed).map_err(|e| format!("seed: {e}"))?;
    let doc = SnapshotDoc::parse(&seed.snapshot.to_string()).map_err(|e| format!("seed snapshot: {e}"))?;
    let engine = Engine::from_doc(doc.clone()).map_err(|e| format!("seed snapshot: {e}"))?;
    if doc.viewer.is_some() {
        return Err("seed snapshot must be a full snapshot (viewer: null)".into());
    }
    for user in seed.passwords.keys() {
        if engine.user_doc_by_id(user).is_none() {
            return Err(format!("seed: password for unknown user `{user}`"));
        }
    }
    for device in seed.claim_codes.keys() {
        if engine.device_doc_by_id(device).is_none() {
            return Err(format!("seed: claim code for unknown device `{device}`"));
        }
    }
    let hashed = hash_all(seed.passwords.into_iter().collect())?;
    let claims = hash_all(seed.claim_codes.into_iter().collect())?;
    store.seed(&doc, &hashed, &claims, only_if_empty).map_err(|e| e.message)
}

fn new_key(store: &Db) -> Result<String, String> {
    let secret = auth::random_key()?;
    let id = key_id_of(&secret);
    store.rotate_key(&id, &secret).map_err(|e| e.message)?;
    Ok(id)
}

fn edge_tokens(path: Option<&PathBuf>) -> Result<HashSet<String>, String> {
    let Some(path) = path else { return Ok(HashSet::new()) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(auth::digest).collect())
}

/// The most header bytes a request may carry.
const MAX_HEAD: usize = 32 * 1024;

/// Security headers on every answer; bodies refused up front by their declared length; a
/// deadline for every answer (event streams: for their headers).
async fn harden(timeout: Duration, req: Request, next: Next) -> Response {
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let head: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    let mut res = if declared.is_some_and(|n| n > api::MAX_BODY as u64) {
        extract::too_large().into_response()
    } else if head > MAX_HEAD {
        ApiError::RefusedBody(
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HEADERS_TOO_LARGE",
            format!("request headers are limited to {MAX_HEAD} bytes"),
        )
        .into_response()
    } else {
        match tokio::time::timeout(timeout, next.run(req)).await {
            Ok(res) => res,
            Err(_) => ApiError::Busy.into_response(),
        }
    };
    let h = res.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    res
}

/// A replica that is not current with the store (SPEC §9) answers no `/api` request.
async fn ready(axum::extract::State(app): axum::extract::State<AppState>, req: Request, next: Next) -> Response {
    if !app.is_ready() && req.uri().path().starts_with("/api/") {
        return ApiError::NotReady.into_response();
    }
    next.run(req).await
}

fn router(app: AppState, args: &ServeArgs) -> Router {
    let timeout = Duration::from_secs(args.request_timeout.max(1));
    Router::new()
        .route("/api/login", post(api::login))
        .route("/api/logout", post(api::logout))
        .route("/api/token", post(api::token))
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
        .route("/api/edge/snapshot", get(edge::snapshot))
        .route("/api/edge/deltas", get(edge::deltas))
        .route("/api/edge/events", get(edge::events))
        .route("/api/edge/revoked", get(edge::revoked))
        .route("/.well-known/fleetgate-keys", get(api::keys))
        .route("/healthz", get(api::healthz))
        .route("/api/{*rest}", axum::routing::any(api::not_found))
        .nest_service("/pkg", ServeDir::new(&args.pkg))
        .fallback_service(ServeDir::new(&args.www))
        .layer(DefaultBodyLimit::max(api::MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(app.clone(), ready))
        .layer(axum::middleware::from_fn(move |req, next| harden(timeout, req, next)))
        .with_state(app)
}

/// Background work: session expiry and key reloads every second, edge renewals, retention.
fn spawn_background(app: AppState, renew: u64) {
    let a = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let b = a.clone();
            let r = tokio::task::spawn_blocking(move || {
                b.end_expired()?;
                if b.reload_keys()? {
                    tracing::info!("signing key changed: now {}", b.keys().active_id);
                }
                Ok::<(), ApiError>(())
            })
            .await;
            if let Ok(Err(e)) = r {
                tracing::warn!("session/key upkeep: {e:?}");
            }
        }
    });
    let a = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(renew.max(1)));
        loop {
            tick.tick().await;
            let b = a.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || b.renew()).await {
                tracing::warn!("edge renewal: {e:?}");
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let b = app.clone();
            b.logins.prune(store::now());
            b.claims.prune(store::now());
            match tokio::task::spawn_blocking(move || b.prune()).await {
                Ok(Ok(n)) if n > 0 => tracing::info!("retention: removed {n} rows"),
                Ok(Err(e)) => tracing::warn!("retention: {e:?}"),
                _ => {}
            }
        }
    });
}

/// Accepts connections (at most `max` at once), each served by hyper with a deadline for the
/// request head and a bounded header size.
async fn serve(listener: tokio::net::TcpListener, app: Router, max: usize) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let svc =
            tower::ServiceExt::map_request(app.clone(), move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(addr));
                req
            });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(svc));
            let _ = conn.await;
            drop(permit);
        });
    }
}

/// Opens the store the flags name: PostgreSQL with `--database-url`, else the SQLite file.
fn open_store(
    url: Option<&str>,
    db: &std::path::Path,
    sync_full: bool,
    reset: bool,
    rt: &tokio::runtime::Runtime,
) -> Result<Db, String> {
    match url {
        Some(url) => Db::postgres(url, rt.handle().clone()).map_err(|e| e.message),
        None => Db::sqlite(db, sync_full, reset).map_err(|e| e.message),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    // Blocking threads are bounded too: each keeps its own allocator arena.
    tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(64).build().map_err(|e| e.to_string())
}

fn run_server(args: ServeArgs) -> Result<(), String> {
    let rt = runtime()?;
    let replacing = args.seed.is_some() || args.demo;
    let store = open_store(args.database_url.as_deref(), &args.db, args.sync_full, replacing, &rt)?;
    if let Some(path) = &args.seed {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("seed {}: {e}", path.display()))?;
        seed_store(&store, value, false)?;
        tracing::info!("seeded the world from {}", path.display());
    } else if args.demo && store.revision().map_err(|e| e.message)?.is_none() && seed_store(&store, demo::seed(), true)?
    {
        tracing::info!("seeded the demo world");
    }
    if store.keys().map_err(|e| e.message)?.iter().all(|k| k.retired_at.is_some()) {
        let id = new_key(&store)?;
        tracing::info!("made signing key {id}");
    }
    let cfg = Config {
        demo: args.demo,
        session_seconds: args.session_seconds.max(1),
        signed_seconds: args.signed_seconds.max(1),
        renew_seconds: args.renew_seconds.max(1),
        token_seconds: args.token_seconds,
        invite_seconds: args.invite_days.max(0) * 86_400,
        retention: Retention {
            keep_changes: args.keep_changes.max(1),
            audit_days: args.audit_days.max(1),
            outbox_days: args.outbox_days.max(1),
            command_days: args.command_days.max(1),
        },
        edge_tokens: edge_tokens(args.edge_token_file.as_ref())?,
        trusted_proxies: args.trusted_proxies.clone(),
    };
    let renew = cfg.renew_seconds;
    let app = Arc::new(App::new(store, cfg)?);
    {
        let e = app.engine();
        let (orgs, users, _, devices) = e.counts();
        tracing::info!("revision {}: {orgs} orgs, {users} users, {devices} devices", e.revision());
    }
    let routes = router(app.clone(), &args);
    let url = args.database_url.clone();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        if let Some(url) = url {
            replica::spawn(app.clone(), url);
            // Listening for changes and caught up before the first request is accepted.
            while !app.is_ready() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        spawn_background(app, renew);
        tracing::info!("fleetgate-server listening on http://{addr}");
        println!("fleetgate-server listening on http://{addr}");
        serve(listener, routes, args.max_connections).await;
        Ok(())
    })
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let result = match args.cmd {
        Some(Cmd::RotateKey { db, database_url }) => {
            // The runtime runs the PostgreSQL driver: it lives until the key is stored.
            runtime().and_then(|rt| {
                let store = open_store(database_url.as_deref(), &db, false, false, &rt)?;
                let id = new_key(&store)?;
                println!("active signing key: {id}");
                Ok(())
            })
        }
        None => run_server(args.serve),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetgate-server: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
