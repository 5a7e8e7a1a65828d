//! The HTTP API of SPEC §7. Every decision goes through the core crate: the server stores,
//! authenticates, serializes and audits, and holds no policy logic of its own.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use fleetgate::delta::Op;
use fleetgate::project::{diff_projections, projected_delta, Part, Probe};
use fleetgate::signed::Envelope;
use fleetgate::snapshot::SafeInt;
use fleetgate::{Action, Command, Delta, Engine, Permission};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::auth;
use crate::store::{now, AuditEntry, Store};

/// Largest request body.
pub const MAX_BODY: usize = 1 << 20;
/// How long a session lasts.
pub const SESSION_SECONDS: i64 = 24 * 3600;
/// How long a signed snapshot is valid.
pub const SIGNED_SECONDS: u64 = 3600;
/// Change-log entries kept for `/api/deltas` and resumed event streams.
pub const KEEP_CHANGES: u64 = 10_000;

/// A subscriber of `/api/events`.
struct Subscriber {
    viewer: String,
    tx: mpsc::UnboundedSender<Event>,
}

/// The shared state.
pub struct Inner {
    pub engine: RwLock<Engine>,
    pub store: Mutex<Store>,
    sessions: Mutex<HashMap<String, (String, i64)>>,
    subscribers: Mutex<Vec<Subscriber>>,
    pub signing_key: [u8; 32],
    pub key_id: String,
    pub demo: bool,
}

/// The handle handlers share.
pub type AppState = Arc<Inner>;

impl Inner {
    pub fn new(engine: Engine, store: Store, signing_key: [u8; 32], demo: bool) -> Self {
        let public = Envelope::public_key(&signing_key);
        let key_id = format!("k-{}", auth::digest(&public).get(..12).unwrap_or("0"));
        Self {
            engine: RwLock::new(engine),
            store: Mutex::new(store),
            sessions: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            signing_key,
            key_id,
            demo,
        }
    }
}

/// An API error: status, stable code, message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String, String);

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self(status, code.to_owned(), message.into())
    }
    fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!("{message}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", message)
    }
    fn engine(e: &fleetgate::Error) -> Self {
        use fleetgate::ErrorCode as C;
        let status = match e.kind() {
            C::RevisionMismatch => StatusCode::CONFLICT,
            C::NotSwitchable => StatusCode::FORBIDDEN,
            C::DuplicateId
            | C::UnknownReference
            | C::OrgCycle
            | C::DepthExceeded
            | C::OwnerNotMember
            | C::UnknownRole => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, e.code(), e.message())
    }
    fn denied(code: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, format!("denied: {code}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": {"code": self.1, "message": self.2}}))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn lock<T>(m: &Mutex<T>) -> ApiResult<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| ApiError::internal("a lock was poisoned"))
}

fn read(e: &RwLock<Engine>) -> ApiResult<std::sync::RwLockReadGuard<'_, Engine>> {
    e.read().map_err(|_| ApiError::internal("the engine lock was poisoned"))
}

fn write(e: &RwLock<Engine>) -> ApiResult<std::sync::RwLockWriteGuard<'_, Engine>> {
    e.write().map_err(|_| ApiError::internal("the engine lock was poisoned"))
}

fn store_err(e: String) -> ApiError {
    ApiError::internal(e)
}

/// Parses a JSON body: `application/json` only, strict types.
fn json_body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> ApiResult<T> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send `content-type: application/json`",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", "body is not UTF-8"))?;
    serde_json::from_str(text).map_err(|e| {
        let code = if e.is_data() { "INVALID_REQUEST" } else { "INVALID_JSON" };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    })
}

fn body_text(headers: &HeaderMap, body: &Bytes) -> ApiResult<String> {
    let v: Value = json_body(headers, body)?;
    Ok(v.to_string())
}

/// The authenticated caller.
pub struct Caller {
    pub user: String,
    token_hash: String,
}

fn token_of(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok())?;
    cookies.split(';').find_map(|c| c.trim().strip_prefix("fleetgate_session=").map(str::to_owned))
}

fn authenticate(s: &Inner, headers: &HeaderMap) -> ApiResult<Caller> {
    let token = token_of(headers)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "missing bearer token"))?;
    let h = auth::digest(&token);
    let cached = lock(&s.sessions)?.get(&h).cloned();
    let session = match cached {
        Some(x) => Some(x),
        None => {
            let found = lock(&s.store)?.session(&h).map_err(store_err)?;
            if let Some(x) = &found {
                lock(&s.sessions)?.insert(h.clone(), x.clone());
            }
            found
        }
    };
    let (user, expires) =
        session.ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "INVALID_TOKEN", "unknown session token"))?;
    if expires <= now() {
        lock(&s.sessions)?.remove(&h);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "SESSION_EXPIRED",
            "the session has expired; sign in again",
        ));
    }
    Ok(Caller { user, token_hash: h })
}

fn user_json(e: &Engine, user: &str) -> Value {
    e.user_doc_by_id(user).map_or(Value::Null, |u| serde_json::to_value(u).unwrap_or(Value::Null))
}

// ---- login, me ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

pub async fn login(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let req: Login = json_body(&headers, &body)?;
    let bad = || ApiError::new(StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "unknown email or wrong password");
    let user = read(&s.engine)?.user_by_email(&req.email).ok_or_else(bad)?;
    let hash = lock(&s.store)?.password_hash(user.id.as_str()).map_err(store_err)?.ok_or_else(bad)?;
    let password = req.password;
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if !ok {
        return Err(bad());
    }
    if user.status != fleetgate::Status::Active {
        return Err(ApiError::denied("DENY_USER_INACTIVE"));
    }
    let token = auth::new_token().map_err(ApiError::internal)?;
    let expires = now() + SESSION_SECONDS;
    lock(&s.store)?.create_session(&auth::digest(&token), user.id.as_str(), expires).map_err(store_err)?;
    let cookie = format!("fleetgate_session={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}");
    let mut res = axum::Json(json!({"token": token, "user": user, "expiresAt": expires})).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

pub async fn logout(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let caller = authenticate(&s, &headers)?;
    lock(&s.sessions)?.remove(&caller.token_hash);
    lock(&s.store)?.expire_session(&caller.token_hash, 0).map_err(store_err)?;
    let mut res = axum::Json(json!({"ok": true})).into_response();
    res.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("fleetgate_session=; Path=/; Max-Age=0"));
    Ok(res)
}

pub async fn me(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let caller = authenticate(&s, &headers)?;
    let e = read(&s.engine)?;
    let memberships: Vec<Value> = e
        .memberships_of(&caller.user)
        .into_iter()
        .map(|(org, role)| {
            let name = e.org_doc_by_id(&org).map(|o| o.name).unwrap_or_default();
            json!({"org": org, "orgName": name, "role": role})
        })
        .collect();
    Ok(axum::Json(json!({
        "user": user_json(&e, &caller.user),
        "memberships": memberships,
        "switchableOrgs": e.switchable_orgs(&caller.user),
        "revision": e.revision(),
    }))
    .into_response())
}

// ---- snapshots and deltas --------------------------------------------------------------------

#[derive(Deserialize)]
pub struct SnapshotQuery {
    signed: Option<String>,
}

fn etag_matches(headers: &HeaderMap, revision: u64) -> bool {
    headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|t| {
            let t = t.trim().trim_start_matches("W/").trim_matches('"');
            t == "*" || t == revision.to_string()
        })
    })
}

pub async fn snapshot(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SnapshotQuery>,
) -> ApiResult<Response> {
    let caller = authenticate(&s, &headers)?;
    let signed = matches!(q.signed.as_deref(), Some("1" | "true"));
    let (revision, body) = {
        let e = read(&s.engine)?;
        let rev = e.revision();
        if !signed && etag_matches(&headers, rev) {
            let mut res = StatusCode::NOT_MODIFIED.into_response();
            res.headers_mut().insert(header::ETAG, etag(rev));
            return Ok(res);
        }
        (rev, e.project_json(&caller.user))
    };
    let body = if signed {
        let mut v: Value = serde_json::from_str(&body).map_err(|e| ApiError::internal(e.to_string()))?;
        let t = now().max(0) as u64;
        if let Some(o) = v.as_object_mut() {
            o.insert("issuedAt".into(), json!(t));
            o.insert("expiresAt".into(), json!(t + SIGNED_SECONDS));
        }
        let payload = v.to_string();
        serde_json::to_string(&Envelope::sign(payload.as_bytes(), &s.key_id, &s.signing_key)).unwrap_or_default()
    } else {
        body
    };
    let mut res = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    res.headers_mut().insert(header::ETAG, etag(revision));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    Ok(res)
}

fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The caller's projected delta from revision `since` to now (`None`: too old).
fn catch_up(s: &Inner, e: &mut Engine, viewer: &str, since: u64) -> ApiResult<Option<Delta>> {
    let rev = e.revision();
    if since > rev {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "REVISION_MISMATCH",
            format!("revision {since} is ahead of the server's {rev}"),
        ));
    }
    let Some(inverse) = lock(&s.store)?.inverses_since(since).map_err(store_err)? else { return Ok(None) };
    let mut old = e
        .with_ops(&inverse, |old| old.project(viewer))
        .map_err(|err| ApiError::internal(format!("rebuilding revision {since}: {err}")))?;
    old.revision = SafeInt(since);
    Ok(Some(diff_projections(old, e.project(viewer))))
}

#[derive(Deserialize)]
pub struct DeltasQuery {
    since: Option<String>,
}

pub async fn deltas(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DeltasQuery>,
) -> ApiResult<Response> {
    let caller = authenticate(&s, &headers)?;
    let since: u64 = q.since.as_deref().and_then(|v| v.parse().ok()).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "`since` must be a revision number")
    })?;
    let mut e = write(&s.engine)?;
    if since == e.revision() {
        return Ok(axum::Json(json!([])).into_response());
    }
    match catch_up(&s, &mut e, &caller.user, since)? {
        Some(d) => Ok(([(header::CONTENT_TYPE, "application/json")], format!("[{}]", d.to_json())).into_response()),
        None => Err(ApiError::new(
            StatusCode::GONE,
            "REVISION_GONE",
            format!("revision {since} is too old; fetch /api/snapshot"),
        )),
    }
}

pub async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DeltasQuery>,
) -> ApiResult<Response> {
    let caller = authenticate(&s, &headers)?;
    let since: Option<u64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| q.since.as_deref().and_then(|v| v.parse().ok()));
    let (tx, rx) = mpsc::unbounded_channel();
    {
        // Under the write lock no change can slip between the catch-up and the subscription.
        let mut e = write(&s.engine)?;
        if let Some(since) = since.filter(|n| *n < e.revision()) {
            match catch_up(&s, &mut e, &caller.user, since)? {
                Some(d) => {
                    let _ = tx.send(Event::default().id(d.to.0.to_string()).event("delta").data(d.to_json()));
                }
                None => {
                    let _ =
                        tx.send(Event::default().event("resync").data(json!({"revision": e.revision()}).to_string()));
                }
            }
        }
        lock(&s.subscribers)?.push(Subscriber { viewer: caller.user.clone(), tx });
    }
    let stream = UnboundedReceiverStream::new(rx).map(Ok::<Event, Infallible>);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

// ---- devices ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicesQuery {
    active_org: Option<String>,
    action: Option<String>,
}

pub async fn devices(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DevicesQuery>,
) -> ApiResult<Response> {
    let caller = authenticate(&s, &headers)?;
    let action = match q.action.as_deref() {
        None | Some("view") => Action::View,
        Some("control") => Action::Control,
        Some(other) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", format!("unknown action `{other}`")))
        }
    };
    let e = read(&s.engine)?;
    let list = e
        .visible_devices(&caller.user, action, q.active_org.as_deref().filter(|o| !o.is_empty()))
        .map_err(|err| ApiError::engine(&err))?;
    Ok(axum::Json(list).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceCommand {
    name: String,
    #[serde(default)]
    params: Option<serde_json::Map<String, Value>>,
}

pub async fn device_command(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let caller = authenticate(&s, &headers)?;
    let req: DeviceCommand = json_body(&headers, &body)?;
    if req.name.trim().is_empty() || req.name.len() > 64 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_COMMAND", "`name` must be 1 to 64 bytes"));
    }
    let (decision, org) = {
        let e = read(&s.engine)?;
        (e.explain(&caller.user, &id, Action::Control), e.device_doc_by_id(&id).map(|d| d.org.to_string()))
    };
    let params = Value::Object(req.params.unwrap_or_default()).to_string();
    let outcome = decision.code.as_str();
    let audit = AuditEntry {
        actor: &caller.user,
        action: "device.command",
        org: org.as_deref(),
        target: Some(&id),
        outcome,
        detail: json!({"name": req.name, "decision": decision}),
    };
    if !decision.allowed {
        lock(&s.store)?.audit(&audit).map_err(store_err)?;
        return Err(ApiError::denied(outcome));
    }
    let cmd_id =
        lock(&s.store)?.queue_device_command(&id, &caller.user, &req.name, &params, &audit).map_err(store_err)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"id": cmd_id, "status": "queued", "device": id, "decision": decision})),
    )
        .into_response())
}

// ---- commands --------------------------------------------------------------------------------

/// Applies an accepted delta: persists it (with `extra` writes) in one transaction, applies it to
/// the engine, and sends each event subscriber its projected delta.
fn commit(
    s: &Inner,
    e: &mut Engine,
    delta: &Delta,
    audit: &AuditEntry<'_>,
    extra: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), String>,
) -> ApiResult<()> {
    let inverse: Vec<Op> = e.inverse_ops(&delta.ops);
    let viewers: Vec<String> = {
        let mut subs = lock(&s.subscribers)?;
        subs.retain(|x| !x.tx.is_closed());
        let mut v: Vec<String> = subs.iter().map(|x| x.viewer.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let befores: Vec<(String, Probe, Part)> = viewers
        .into_iter()
        .map(|v| {
            let probe = e.probe(delta, &v);
            let part = e.projection_part(&v, &probe);
            (v, probe, part)
        })
        .collect();
    {
        let mut store = lock(&s.store)?;
        store
            .commit_delta(delta, &inverse, audit, extra)
            .map_err(|err| ApiError::new(StatusCode::CONFLICT, "CONFLICT", err))?;
        if delta.to.0 % 1000 == 0 {
            store.prune_changes(KEEP_CHANGES).map_err(store_err)?;
        }
    }
    if let Err(err) = e.apply_delta(delta) {
        // The store took it but the engine did not: the store is the authority, reload from it.
        tracing::error!("engine refused a stored delta ({err}); reloading from the store");
        let doc = lock(&s.store)?.load().map_err(store_err)?;
        *e = Engine::from_doc(doc).map_err(|err| ApiError::internal(err.to_string()))?;
    }
    let subs = lock(&s.subscribers)?;
    for (viewer, probe, before) in befores {
        let after = e.projection_part(&viewer, &probe);
        let pd = projected_delta(&before, &after, delta.from.0, delta.to.0);
        let event = Event::default().id(delta.to.0.to_string()).event("delta").data(pd.to_json());
        for sub in subs.iter().filter(|x| x.viewer == viewer) {
            let _ = sub.tx.send(event.clone());
        }
    }
    Ok(())
}

fn org_of_command(e: &Engine, cmd: &Command) -> Option<String> {
    let v = serde_json::to_value(cmd).ok()?;
    for key in ["org", "parent"] {
        if let Some(o) = v.get(key).and_then(Value::as_str) {
            return Some(o.to_owned());
        }
    }
    let device = v.get("device").and_then(Value::as_str)?;
    e.device_doc_by_id(device).map(|d| d.org.to_string())
}

pub async fn command(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let caller = authenticate(&s, &headers)?;
    let text = body_text(&headers, &body)?;
    let mut cmd = Command::parse(&text).map_err(|e| ApiError::engine(&e))?;
    // The server names the users it creates.
    let mut invite_token = None;
    if let Command::Invite { user_id, .. } = &mut cmd {
        let id =
            format!("u-{}", auth::digest(&auth::new_token().map_err(ApiError::internal)?).get(..16).unwrap_or("0"));
        *user_id = Some(fleetgate::snapshot::Id::new(id).map_err(ApiError::internal)?);
        invite_token = Some(auth::new_token().map_err(ApiError::internal)?);
    }
    let mut e = write(&s.engine)?;
    let (mut decision, delta) = e.command_delta(&caller.user, &cmd).map_err(|err| ApiError::engine(&err))?;
    // The claim code is a server-side secret: check it here.
    if let (Command::ClaimDevice { device, code, .. }, true) = (&cmd, decision.allowed) {
        let stored = lock(&s.store)?.claim_code_hash(device.as_str()).map_err(store_err)?;
        if stored.as_deref() != Some(auth::digest(code).as_str()) {
            decision = fleetgate::Decision::of(fleetgate::Code::DenyInvalidTarget);
        }
    }
    let org = org_of_command(&e, &cmd);
    let detail = json!({"command": cmd, "decision": decision});
    let audit = AuditEntry {
        actor: &caller.user,
        action: cmd.op(),
        org: org.as_deref(),
        target: None,
        outcome: decision.code.as_str(),
        detail,
    };
    let delta = match delta.filter(|_| decision.allowed) {
        Some(d) => d,
        None => {
            lock(&s.store)?.audit(&audit).map_err(store_err)?;
            return Err(ApiError::denied(decision.code.as_str()));
        }
    };
    let mut response = serde_json::Map::new();
    response.insert("revision".into(), json!(delta.to.0));
    let demo = s.demo;
    match &cmd {
        Command::Invite { email, org, user_id: Some(uid), .. } => {
            let token = invite_token.unwrap_or_default();
            let link = format!("/#accept={token}");
            tracing::info!("invite for {email} into {org}: accept at {link}");
            response.insert("userId".into(), json!(uid));
            if demo {
                response.insert("acceptLink".into(), json!(link));
            }
            let (email, org, uid) = (email.clone(), org.to_string(), uid.to_string());
            let hash = auth::digest(&token);
            commit(&s, &mut e, &delta, &audit, move |tx| {
                tx.execute(
                    "INSERT INTO invites (token_hash, user, org, created_at) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![hash, uid, org, now()],
                )
                .map_err(|e| e.to_string())?;
                tx.execute(
                    "INSERT INTO outbox (at, email, org, subject, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![
                        now(),
                        email,
                        org,
                        "You are invited to fleetgate",
                        format!("Accept your invitation: {link}")
                    ],
                )
                .map_err(|e| e.to_string())?;
                Ok(())
            })?;
        }
        Command::ClaimDevice { device, .. } => {
            let device = device.to_string();
            commit(&s, &mut e, &delta, &audit, move |tx| {
                tx.execute("DELETE FROM claim_codes WHERE device = ?1", [device]).map_err(|e| e.to_string()).map(|_| ())
            })?;
        }
        _ => commit(&s, &mut e, &delta, &audit, |_| Ok(()))?,
    }
    Ok(axum::Json(Value::Object(response)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Accept {
    token: String,
    password: String,
}

pub async fn accept_invite(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let req: Accept = json_body(&headers, &body)?;
    if req.password.chars().count() < 8 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "WEAK_PASSWORD",
            "choose a password of at least 8 characters",
        ));
    }
    let token_hash = auth::digest(&req.token);
    let (user, org) = lock(&s.store)?.invite(&token_hash).map_err(store_err)?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "UNKNOWN_INVITE", "no pending invitation for this token")
    })?;
    let password = req.password;
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::internal)?;
    let session = auth::new_token().map_err(ApiError::internal)?;
    let session_hash = auth::digest(&session);
    let expires = now() + SESSION_SECONDS;
    let mut e = write(&s.engine)?;
    let mut doc = e
        .user_doc_by_id(&user)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "UNKNOWN_INVITE", "the invited user no longer exists"))?;
    if doc.status != fleetgate::Status::Pending {
        return Err(ApiError::new(StatusCode::CONFLICT, "CONFLICT", "the invited user is no longer pending"));
    }
    doc.status = fleetgate::Status::Active;
    let delta = Delta::new(e.revision(), e.revision() + 1, vec![Op::PutUser { user: doc.clone() }]);
    let audit = AuditEntry {
        actor: &user,
        action: "acceptInvite",
        org: Some(&org),
        target: Some(&user),
        outcome: "ALLOW",
        detail: json!({}),
    };
    let uid = user.clone();
    commit(&s, &mut e, &delta, &audit, move |tx| {
        tx.execute("UPDATE invites SET accepted_at = ?2 WHERE token_hash = ?1", rusqlite::params![token_hash, now()])
            .map_err(|e| e.to_string())?;
        tx.execute("INSERT OR REPLACE INTO passwords (user, hash) VALUES (?1, ?2)", rusqlite::params![uid, hash])
            .map_err(|e| e.to_string())?;
        tx.execute(
            "INSERT INTO sessions (token_hash, user, expires_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![session_hash, uid, expires],
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    })?;
    Ok(axum::Json(json!({"token": session, "user": doc, "revision": e.revision()})).into_response())
}

// ---- audit, keys, health, demo --------------------------------------------------------------

pub async fn audit(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let caller = authenticate(&s, &headers)?;
    let e = read(&s.engine)?;
    let visible = |org: Option<&str>| org.is_some_and(|o| e.permissions_in(&caller.user, o).has(Permission::UsersView));
    let entries = lock(&s.store)?.audit_entries(500, visible).map_err(store_err)?;
    Ok(axum::Json(entries).into_response())
}

pub async fn outbox(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let caller = authenticate(&s, &headers)?;
    if !s.demo {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "the outbox is shown in demo mode only"));
    }
    let e = read(&s.engine)?;
    let visible = |org: &str| e.permissions_in(&caller.user, org).has(Permission::UsersInvite);
    Ok(axum::Json(lock(&s.store)?.outbox(visible).map_err(store_err)?).into_response())
}

pub async fn keys(State(s): State<AppState>) -> Response {
    axum::Json(json!({"keys": [{"keyId": s.key_id, "publicKey": Envelope::public_key(&s.signing_key)}]}))
        .into_response()
}

pub async fn healthz(State(s): State<AppState>) -> ApiResult<Response> {
    let rev = read(&s.engine)?.revision();
    Ok(axum::Json(json!({"status": "ok", "revision": rev})).into_response())
}

pub async fn demo_info(State(s): State<AppState>) -> ApiResult<Response> {
    if !s.demo {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "not in demo mode"));
    }
    Ok(axum::Json(crate::demo::logins()).into_response())
}

/// Refuses bodies over `MAX_BODY` up front (by `Content-Length`) and gives every 413 the JSON
/// error shape, also when the limit is hit while reading a chunked body.
pub async fn limit_body(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("bodies are limited to {MAX_BODY} bytes"),
        )
        .into_response()
    };
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let res = next.run(req).await;
    if res.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    res
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
}
