//! The HTTP API of SPEC §7 and §7.1 for users. Handlers are thin: they authenticate (the
//! [`Caller`] extractor), ask the core crate for every decision, the store for every row, and
//! do work proportional to the fleet on a blocking thread against a published engine version,
//! never under a lock.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use fleetgate::authority::{audit_command_detail, AcceptRefusal};
use fleetgate::project::diff_projections;
use fleetgate::snapshot::{Id, SafeInt};
use fleetgate::{Action, Code, Command, Decision, Delta, Engine};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, ClientAddr, Json, JsonText};
use crate::state::{App, AppState};
use crate::store::{now, Acceptance, AuditRecord, AuditRow, Effects, NewInvite, SessionRow};

/// Largest request body.
pub const MAX_BODY: usize = 1 << 20;
/// How long work waits for a heavy-work slot before the request is answered 503.
const HEAVY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs blocking work (store access, hashing, writes) off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(format!("blocking task: {e}")))?
}

/// Runs work proportional to the fleet or to history: at most `App::heavy` at once.
pub async fn heavy<T: Send + 'static>(
    app: &AppState,
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let _permit = tokio::time::timeout(HEAVY_WAIT, app.heavy.acquire())
        .await
        .map_err(|_| ApiError::Busy)?
        .map_err(|_| ApiError::Busy)?;
    blocking(f).await
}

fn json_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

// ---- login, logout, token, me ------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    email: String,
    password: String,
}

fn session_cookie(token: &str, max_age: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("fleetgate_session={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"))
        .ok()
}

/// `POST /api/login`: throttled per account and address before any hash; unknown emails cost
/// one Argon2 verification like known ones.
pub async fn login(
    State(app): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Json(req): Json<Login>,
) -> ApiResult<Response> {
    let key = format!("login:{}", req.email.trim().to_ascii_lowercase());
    let ip = addr;
    let (a, k) = (app.clone(), key.clone());
    blocking(move || Ok(a.logins.check(&k, ip, now()))).await?.map_err(ApiError::Throttled)?;
    let engine = app.engine();
    let user = engine.user_by_email(req.email.trim());
    let a = app.clone();
    let uid = user.as_ref().map(|u| u.id.to_string());
    let stored = blocking(move || match uid {
        Some(u) => Ok(a.db.password_hash(&u)?),
        None => Ok(None),
    })
    .await?;
    let known = stored.is_some();
    let hash = stored.unwrap_or_else(|| app.dummy_hash.clone());
    let password = req.password;
    let ok = app.hasher.run(move || auth::verify_password(&password, &hash)).await.ok_or(ApiError::Busy)? && known;
    let Some(user) = user.filter(|_| ok) else {
        let a = app.clone();
        blocking(move || {
            a.logins.fail(&key, ip, now());
            Ok(())
        })
        .await?;
        return Err(ApiError::InvalidCredentials);
    };
    let a = app.clone();
    blocking(move || {
        a.logins.succeed(&key);
        Ok(())
    })
    .await?;
    if !engine.may_sign_in(user.id.as_str()) {
        return Err(ApiError::denied(Code::DenyUserInactive.as_str()));
    }
    let a = app.clone();
    let uid = user.id.to_string();
    let (token, session) = blocking(move || a.create_session(&uid)).await?;
    let mut res = axum::Json(json!({"token": token, "user": user, "expiresAt": session.expires_at})).into_response();
    if let Some(v) = session_cookie(&token, app.cfg.session_seconds) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

/// `POST /api/logout`: ends the caller's session; its tokens and streams die at once.
pub async fn logout(State(app): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let a = app.clone();
    blocking(move || a.end_session(&caller.session, "logout")).await?;
    let mut res = axum::Json(json!({"ok": true})).into_response();
    res.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("fleetgate_session=; Path=/; Max-Age=0"));
    Ok(res)
}

/// `POST /api/token`: a short-lived access token (SPEC §4.5) bound to the caller's session.
pub async fn token(State(app): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let t = now();
    let exp = (t + app.cfg.token_seconds).min(caller.session_expires);
    let claims = fleetgate::token::TokenClaims {
        iss: "fleetgate".into(),
        sub: caller.user.clone(),
        sid: caller.session.clone(),
        iat: t.max(0) as u64,
        exp: exp.max(0) as u64,
    };
    let keys = app.keys();
    let token = fleetgate::token::sign_token(&claims, &keys.active_id, &keys.active_secret);
    Ok(axum::Json(json!({"accessToken": token, "expiresAt": exp})).into_response())
}

/// `GET /api/me`: the caller, its memberships and switchable orgs.
pub async fn me(State(app): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let e = app.engine();
    let memberships: Vec<Value> = e
        .memberships_of(&caller.user)
        .into_iter()
        .map(|(org, role)| {
            let name = e.org_doc_by_id(&org).map(|o| o.name).unwrap_or_default();
            json!({"org": org, "orgName": name, "role": role})
        })
        .collect();
    Ok(axum::Json(json!({
        "user": e.user_doc_by_id(&caller.user),
        "memberships": memberships,
        "switchableOrgs": e.switchable_orgs(&caller.user),
        "revision": e.revision(),
        "session": {"expiresAt": caller.session_expires},
    }))
    .into_response())
}

// ---- snapshots, deltas, events -----------------------------------------------------------------

#[derive(Deserialize)]
pub struct SnapshotQuery {
    signed: Option<String>,
}

/// The ETag of a representation: the revision and a digest of who it is for (SPEC §7.1).
pub fn etag(revision: u64, viewer: &str, session: &str) -> String {
    let h = auth::digest(&format!("{viewer}\n{session}"));
    format!("\"{revision}-{}\"", h.get(..16).unwrap_or("0"))
}

/// Whether `If-None-Match` names `tag`.
pub fn etag_matches(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == tag))
}

/// Headers of a cacheable private representation.
pub fn cache_headers(res: &mut Response, tag: &str) {
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("Authorization, Cookie"));
}

/// A snapshot document with `issuedAt`/`expiresAt`, signed.
pub fn sign_doc(app: &App, mut doc: fleetgate::SnapshotDoc) -> String {
    let t = now().max(0) as u64;
    doc.issued_at = Some(SafeInt(t));
    doc.expires_at = Some(SafeInt(t + app.cfg.signed_seconds.max(0) as u64));
    app.sign(serde_json::to_string(&doc).unwrap_or_default().as_bytes())
}

/// `GET /api/snapshot`: the caller's projection, with a per-viewer ETag.
pub async fn snapshot(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<SnapshotQuery>,
) -> ApiResult<Response> {
    let signed = matches!(q.signed.as_deref(), Some("1" | "true"));
    let engine = app.engine();
    let tag = etag(engine.revision(), &caller.user, &caller.session);
    if !signed && etag_matches(&headers, &tag) {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        cache_headers(&mut res, &tag);
        return Ok(res);
    }
    let a = app.clone();
    let body = blocking(move || {
        Ok(if signed { sign_doc(&a, engine.project(&caller.user)) } else { engine.project_json(&caller.user) })
    })
    .await?;
    let mut res = json_text(body);
    if signed {
        res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        res.headers_mut().insert(header::VARY, HeaderValue::from_static("Authorization, Cookie"));
    } else {
        cache_headers(&mut res, &tag);
    }
    Ok(res)
}

/// The viewer's projected delta from `since` to the engine's revision, or `None` when the
/// change log no longer reaches back. Runs on a copy of a published version: no lock is held.
fn catch_up(app: &App, engine: &Engine, viewer: &str, since: u64) -> ApiResult<Option<Delta>> {
    let rev = engine.revision();
    let Some(inverse) = app.db.inverses_between(since, rev)? else { return Ok(None) };
    let mut copy = engine.clone();
    let mut old = copy
        .with_ops(&inverse, |old| old.project(viewer))
        .map_err(|e| ApiError::Internal(format!("rebuilding revision {since}: {e}")))?;
    old.revision = SafeInt(since);
    Ok(Some(diff_projections(old, engine.project(viewer))))
}

#[derive(Deserialize)]
pub struct SinceQuery {
    pub since: Option<String>,
}

/// Parses `since`: a revision number.
pub fn since_of(q: &SinceQuery) -> ApiResult<u64> {
    q.since
        .as_deref()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::BadRequest("INVALID_ARGUMENT", "`since` must be a revision number".into()))
}

/// A revision ahead of the server's: the client talks about another history.
pub fn ahead(since: u64, rev: u64) -> ApiError {
    ApiError::Conflict("REVISION_MISMATCH", format!("revision {since} is ahead of the server's {rev}"))
}

/// A revision the change log no longer reaches.
pub fn gone(since: u64, what: &str) -> ApiError {
    ApiError::Gone("REVISION_GONE", format!("revision {since} is too old; fetch {what}"))
}

/// `GET /api/deltas?since=N`: the caller's projected deltas since N (one merged delta).
pub async fn deltas(State(app): State<AppState>, caller: Caller, Query(q): Query<SinceQuery>) -> ApiResult<Response> {
    let since = since_of(&q)?;
    let engine = app.engine();
    let rev = engine.revision();
    if since == rev {
        return Ok(json_text("[]".into()));
    }
    if since > rev {
        return Err(ahead(since, rev));
    }
    let a = app.clone();
    match heavy(&app, move || catch_up(&a, &engine, &caller.user, since)).await? {
        Some(d) => Ok(json_text(format!("[{}]", d.to_json()))),
        None => Err(gone(since, "/api/snapshot")),
    }
}

/// Where a stream resumes: `Last-Event-ID`, else `?since=`.
pub fn resume_from(headers: &HeaderMap, q: &SinceQuery) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| q.since.as_deref().and_then(|v| v.parse().ok()))
}

/// An SSE answer: the catch-up event (if any), then the live events, with keep-alives.
pub fn event_stream(first: Option<Event>, rx: tokio::sync::mpsc::Receiver<Event>) -> Response {
    let stream = tokio_stream::iter(first).chain(ReceiverStream::new(rx)).map(Ok::<Event, std::convert::Infallible>);
    let mut res = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `GET /api/events`: one projected delta per change, resumable with `Last-Event-ID`; the
/// stream closes within a second of its session's end.
pub async fn events(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<SinceQuery>,
) -> ApiResult<Response> {
    let since = resume_from(&headers, &q);
    let (rx, engine) = app.subscribe_user(&caller.user, &caller.session, since)?;
    let start = engine.revision();
    let first: Option<Event> = match since.filter(|n| *n < start) {
        Some(since) => {
            let a = app.clone();
            let viewer = caller.user.clone();
            Some(match heavy(&app, move || catch_up(&a, &engine, &viewer, since)).await? {
                Some(d) => Event::default().id(start.to_string()).event("delta").data(d.to_json()),
                None => Event::default().event("resync").data(json!({"revision": start}).to_string()),
            })
        }
        None => None,
    };
    Ok(event_stream(first, rx))
}

// ---- devices -------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicesQuery {
    active_org: Option<String>,
    action: Option<String>,
}

/// `GET /api/devices`: the list the wasm engine computes.
pub async fn devices(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<DevicesQuery>,
) -> ApiResult<Response> {
    let action = match q.action.as_deref() {
        None | Some("view") => Action::View,
        Some("control") => Action::Control,
        Some(other) => {
            return Err(ApiError::BadRequest("INVALID_ARGUMENT", format!("unknown action `{}`", truncate(other))))
        }
    };
    let engine = app.engine();
    blocking(move || {
        let list = engine.visible_devices(&caller.user, action, q.active_org.as_deref().filter(|o| !o.is_empty()))?;
        Ok(axum::Json(list).into_response())
    })
    .await
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCommand {
    name: String,
    #[serde(default)]
    params: Option<serde_json::Map<String, Value>>,
}

/// `POST /api/devices/{id}/commands`: 202 when the caller may control the device (queued and
/// audited), else 403 with the decision code (audited without the request body).
pub async fn device_command(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<DeviceCommand>,
) -> ApiResult<Response> {
    if req.name.trim().is_empty() || req.name.len() > 64 {
        return Err(ApiError::BadRequest("INVALID_COMMAND", "`name` must be 1 to 64 bytes".into()));
    }
    let engine = app.engine();
    let decision = engine.explain(&caller.user, &id, Action::Control);
    let audit = AuditRow {
        actor: caller.user.clone(),
        action: "device.command".into(),
        org: engine.device_subject_org(&id),
        target: Some(id.clone()).filter(|_| Id::new(id.as_str()).is_ok()),
        outcome: decision.code.as_str().into(),
        detail: json!({"name": truncate(&req.name)}),
    };
    let params = Value::Object(req.params.unwrap_or_default()).to_string();
    let a = app.clone();
    if !decision.allowed {
        blocking(move || Ok(a.db.audit(&audit)?)).await?;
        return Err(ApiError::denied(decision.code.as_str()));
    }
    let (user, name, device) = (caller.user.clone(), req.name.clone(), id.clone());
    let cmd_id = blocking(move || Ok(a.db.queue_device_command(&device, &user, &name, &params, &audit)?)).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"id": cmd_id, "status": "queued", "device": id, "decision": decision})),
    )
        .into_response())
}

// ---- commands ------------------------------------------------------------------------------------

/// `POST /api/commands`: a §5 command by the caller, decided by the engine, committed with its
/// audit entry and effects; claim codes are checked here (a server-side secret), throttled.
pub async fn command(State(app): State<AppState>, caller: Caller, JsonText(text): JsonText) -> ApiResult<Response> {
    let mut cmd = Command::parse(&text)?;
    let mut invite_token = None;
    if let Command::Invite { user_id, .. } = &mut cmd {
        let id =
            format!("u-{}", auth::digest(&auth::new_token().map_err(ApiError::Internal)?).get(..16).unwrap_or("0"));
        *user_id = Some(Id::new(id).map_err(ApiError::Internal)?);
        invite_token = Some(auth::new_token().map_err(ApiError::Internal)?);
    }
    let verified_claim = match &cmd {
        Command::ClaimDevice { device, code, .. } => Some(check_claim(&app, &caller, device.as_str(), code).await?),
        _ => None,
    };
    let a = app.clone();
    let actor = caller.user.clone();
    let result = blocking(move || {
        a.commit_with(|e| {
            let (mut decision, delta) = e.command_delta(&actor, &cmd)?;
            if let (Some(expected), Command::ClaimDevice { device, .. }) = (&verified_claim, &cmd) {
                // The code was verified against this hash; it must still be the device's.
                if a.db.claim_code_hash(device.as_str())?.as_ref() != Some(expected) {
                    decision = Decision::of(Code::DenyInvalidTarget);
                }
            }
            let audit = AuditRow {
                actor: actor.clone(),
                action: cmd.op().into(),
                org: e.command_subject_org(&actor, &cmd, decision.allowed),
                target: None,
                outcome: decision.code.as_str().into(),
                detail: audit_command_detail(&cmd),
            };
            let Some(delta) = delta.filter(|_| decision.allowed) else {
                return Ok((None, audit, Effects::default(), Err(decision)));
            };
            let mut fx = Effects::default();
            let mut out = serde_json::Map::new();
            out.insert("revision".into(), json!(delta.to.0));
            match &cmd {
                Command::Invite { email, org, user_id: Some(uid), .. } => {
                    let token = invite_token.clone().unwrap_or_default();
                    let link = format!("/#accept={token}");
                    tracing::info!("invitation for {email} into {org}");
                    out.insert("userId".into(), json!(uid));
                    out.insert("acceptLink".into(), json!(link));
                    let expires_at = now() + a.cfg.invite_seconds;
                    out.insert("expiresAt".into(), json!(expires_at));
                    let message = if a.cfg.demo {
                        format!("Accept your invitation: {link}")
                    } else {
                        "Your invitation link was handed to the person who invited you.".to_owned()
                    };
                    fx.invite = Some(NewInvite {
                        token_hash: auth::digest(&token),
                        user: uid.to_string(),
                        org: org.to_string(),
                        expires_at,
                        email: email.clone(),
                        message,
                    });
                }
                Command::ClaimDevice { device, .. } => fx.void_claims.push(device.to_string()),
                _ => {}
            }
            Ok((Some(delta), audit, fx, Ok(Value::Object(out))))
        })
    })
    .await?;
    match result {
        Ok(v) => Ok(axum::Json(v).into_response()),
        Err(decision) => Err(ApiError::denied(decision.code.as_str())),
    }
}

/// Checks a claim code (Argon2id, throttled per device and per actor). Returns the hash it
/// matched; a wrong code is audited (without the code) and denied `DENY_INVALID_TARGET`.
async fn check_claim(app: &AppState, caller: &Caller, device: &str, code: &str) -> ApiResult<String> {
    let t = now();
    let (dkey, akey) = (format!("claim-device:{device}"), format!("claim-actor:{}", caller.user));
    let (a, d, k) = (app.clone(), dkey.clone(), akey.clone());
    blocking(move || Ok(a.claims.check(&d, None, t).and_then(|()| a.claims.check(&k, None, t))))
        .await?
        .map_err(ApiError::Throttled)?;
    let a = app.clone();
    let d = device.to_owned();
    let stored = blocking(move || Ok(a.db.claim_code_hash(&d)?)).await?;
    let hash = stored.clone().unwrap_or_else(|| app.dummy_hash.clone());
    let code = code.to_owned();
    let ok =
        app.hasher.run(move || auth::verify_password(&code, &hash)).await.ok_or(ApiError::Busy)? && stored.is_some();
    match stored.filter(|_| ok) {
        Some(h) => {
            let a = app.clone();
            blocking(move || {
                a.claims.succeed(&dkey);
                a.claims.succeed(&akey);
                Ok(())
            })
            .await?;
            Ok(h)
        }
        None => {
            let a = app.clone();
            blocking(move || {
                a.claims.fail(&dkey, None, t);
                a.claims.fail(&akey, None, t);
                Ok(())
            })
            .await?;
            let engine = app.engine();
            let audit = AuditRow {
                actor: caller.user.clone(),
                action: "claimDevice".into(),
                org: engine.device_subject_org(device).filter(|o| engine.is_member(&caller.user, o)),
                target: None,
                outcome: Code::DenyInvalidTarget.as_str().into(),
                detail: json!({"op": "claimDevice", "device": device, "reason": "wrong claim code"}),
            };
            let a = app.clone();
            blocking(move || Ok(a.db.audit(&audit)?)).await?;
            Err(ApiError::denied(Code::DenyInvalidTarget.as_str()))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    token: String,
    password: String,
}

/// `POST /api/invites/accept`: activates a pending user whose invitation is open and unexpired.
pub async fn accept_invite(State(app): State<AppState>, Json(req): Json<Accept>) -> ApiResult<Response> {
    if req.password.chars().count() < 8 {
        return Err(ApiError::BadRequest("WEAK_PASSWORD", "choose a password of at least 8 characters".into()));
    }
    let token_hash = auth::digest(&req.token);
    let a = app.clone();
    let th = token_hash.clone();
    let invite = blocking(move || Ok(a.db.invite(&th)?)).await?;
    let invite = invite
        .filter(|i| i.open)
        .ok_or_else(|| ApiError::NotFound("UNKNOWN_INVITE", "no pending invitation for this token".into()))?;
    if invite.expires_at <= now() {
        return Err(ApiError::Gone("INVITE_EXPIRED", "the invitation has expired; ask for a new one".into()));
    }
    let password = req.password;
    let hash = app
        .hasher
        .run(move || auth::hash_password(&password))
        .await
        .ok_or(ApiError::Busy)?
        .map_err(ApiError::Internal)?;
    let session_token = auth::new_token().map_err(ApiError::Internal)?;
    let session = SessionRow {
        id: auth::new_session_id().map_err(ApiError::Internal)?,
        token_hash: auth::digest(&session_token),
        user: invite.user.clone(),
        expires_at: now() + app.cfg.session_seconds,
    };
    let a = app.clone();
    let (user, org) = (invite.user.clone(), invite.org.clone());
    let (doc, revision) = blocking(move || {
        a.commit_with(|e| {
            let delta = e.accept_invite_delta(&user).map_err(|r| match r {
                AcceptRefusal::UnknownUser => {
                    ApiError::NotFound("UNKNOWN_INVITE", "the invited user no longer exists".into())
                }
                AcceptRefusal::NotPending => {
                    ApiError::Conflict("CONFLICT", "the invited user is no longer pending".into())
                }
            })?;
            let doc = e.user_doc_by_id(&user).map(|mut d| {
                d.status = fleetgate::Status::Active;
                d
            });
            let audit = AuditRow {
                actor: user.clone(),
                action: "acceptInvite".into(),
                org: Some(org.clone()),
                target: Some(user.clone()),
                outcome: "ALLOW".into(),
                detail: json!({}),
            };
            let fx = Effects {
                acceptance: Some(Acceptance { token_hash, user: user.clone(), password_hash: hash, session }),
                ..Effects::default()
            };
            let rev = delta.to.0;
            Ok((Some(delta), audit, fx, (doc, rev)))
        })
    })
    .await?;
    let mut res = axum::Json(json!({"token": session_token, "user": doc, "revision": revision})).into_response();
    if let Some(v) = session_cookie(&session_token, app.cfg.session_seconds) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

// ---- audit, outbox, keys, health, demo -------------------------------------------------------------

#[derive(Deserialize)]
pub struct AuditQuery {
    limit: Option<usize>,
    before: Option<i64>,
}

/// Replaces ids the viewer's projection does not show with `null`, in an entry's detail.
fn scrub(engine: &Engine, viewer: &str, v: &mut Value) {
    if let Some(obj) = v.as_object_mut() {
        for key in ["id", "user", "org", "parent", "device", "owner", "userId"] {
            if let Some(Value::String(s)) = obj.get(key) {
                if !engine.audit_shows(viewer, s) {
                    obj.insert(key.into(), Value::Null);
                }
            }
        }
    }
}

/// `GET /api/audit?limit=&before=`: entries about orgs (by identity) in which the caller holds
/// `users.view`, newest first, with ids the caller's projection does not show hidden.
pub async fn audit(State(app): State<AppState>, caller: Caller, Query(q): Query<AuditQuery>) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(200).clamp(1, 500);
    let engine = app.engine();
    let a = app.clone();
    blocking(move || {
        let orgs = engine.audit_orgs(&caller.user);
        if orgs.is_empty() {
            return Ok(axum::Json(Vec::<Value>::new()).into_response());
        }
        let rows = a.db.audit_page(&orgs, q.before, limit)?;
        let viewer = caller.user.as_str();
        let shown = |id: &Option<String>| id.clone().filter(|i| engine.audit_shows(viewer, i));
        let out: Vec<Value> = rows
            .into_iter()
            .map(|r| {
                let AuditRecord { id, at, row } = r;
                let mut detail = row.detail;
                scrub(&engine, viewer, &mut detail);
                json!({"id": id, "at": at, "actor": shown(&Some(row.actor)), "action": row.action, "org": row.org,
                    "target": shown(&row.target), "outcome": row.outcome, "detail": detail})
            })
            .collect();
        Ok(axum::Json(out).into_response())
    })
    .await
}

/// `GET /api/outbox` (demo mode): invitation messages of orgs the caller may invite into.
pub async fn outbox(State(app): State<AppState>, caller: Caller) -> ApiResult<Response> {
    if !app.cfg.demo {
        return Err(ApiError::NotFound("NOT_FOUND", "the outbox is shown in demo mode only".into()));
    }
    let engine = app.engine();
    let a = app.clone();
    blocking(move || {
        let orgs = engine.outbox_orgs(&caller.user);
        Ok(axum::Json(a.db.outbox(&orgs)?).into_response())
    })
    .await
}

/// `GET /.well-known/fleetgate-keys`: every published key, the active one marked.
pub async fn keys(State(app): State<AppState>) -> Response {
    let keys = app.keys();
    let list: Vec<Value> =
        keys.published.iter().map(|(id, pk, active)| json!({"keyId": id, "publicKey": pk, "active": active})).collect();
    let mut res = axum::Json(json!({"keys": list})).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    res
}

/// `GET /healthz`: liveness and readiness — `ready` is false (and the status 503) while a
/// replica is catching up with the store — the revision, the store, sessions cached, open
/// streams.
pub async fn healthz(State(app): State<AppState>) -> Response {
    let (users, edges) = app.stream_counts();
    let ready = app.is_ready();
    let body = json!({"status": if ready { "ok" } else { "catching up" }, "ready": ready,
        "revision": app.engine().revision(), "store": if app.db.shared() { "postgres" } else { "sqlite" },
        "sessions": app.sessions.len(), "streams": {"users": users, "edges": edges}});
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// `GET /api/demo`: the demo logins (demo mode only).
pub async fn demo_info(State(app): State<AppState>) -> ApiResult<Response> {
    if !app.cfg.demo {
        return Err(ApiError::NotFound("NOT_FOUND", "not in demo mode".into()));
    }
    Ok(axum::Json(crate::demo::logins()).into_response())
}

/// Any other `/api/…` path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("NOT_FOUND", "no such endpoint".into())
}
