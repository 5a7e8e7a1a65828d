//! Request extractors: the authenticated caller (session token, cookie or access token), the
//! edge credential, strict JSON bodies and the client address.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use std::sync::Arc;

use crate::state::{AppState, Session};
use crate::store::now;

/// The largest access token looked at.
const MAX_TOKEN: usize = 4096;

/// The authenticated caller of a user endpoint.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    /// The session id (`sid`).
    pub session: String,
    pub session_expires: i64,
}

/// The bearer token or session cookie of a request.
pub fn token_of(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return v.strip_prefix("Bearer ").map(str::trim);
    }
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok())?;
    cookies.split(';').find_map(|c| c.trim().strip_prefix("fleetgate_session="))
}

/// Whether a token has the shape of a compact JWT (an access token) rather than a session token.
fn is_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// Authenticates a session token or an access token (SPEC §7.1): the session must be live.
pub async fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = token_of(headers).filter(|t| !t.is_empty()).ok_or(ApiError::Unauthenticated("missing bearer token"))?;
    let t = now();
    let session = if is_jwt(token) {
        if token.len() > MAX_TOKEN {
            return Err(ApiError::Unauthenticated("invalid access token"));
        }
        let claims = fleetgate::token::verify_token(token, &app.keys().verify, t.max(0) as u64)
            .map_err(|_| ApiError::Unauthenticated("invalid or expired access token"))?;
        let s = match app.sessions.by_id(&claims.sid) {
            Some(s) => s,
            None => stored_session(app, claims.sid.clone(), true)
                .await?
                .ok_or(ApiError::Unauthenticated("the session has ended"))?,
        };
        if s.user != claims.sub {
            return Err(ApiError::Unauthenticated("invalid access token"));
        }
        s
    } else {
        let hash = crate::auth::digest(token);
        match app.sessions.by_token(&hash) {
            Some(s) => s,
            // Only a token of the shape this server issues is worth a store lookup.
            None if crate::auth::is_session_token(token) => {
                stored_session(app, hash, false).await?.ok_or(ApiError::Unauthenticated("unknown or ended session"))?
            }
            None => return Err(ApiError::Unauthenticated("unknown or ended session")),
        }
    };
    if session.expires_at <= t {
        return Err(ApiError::Unauthenticated("the session has expired; sign in again"));
    }
    Ok(Caller { user: session.user.clone(), session: session.id.clone(), session_expires: session.expires_at })
}

/// A session this replica has not cached: read from the store on a blocking thread (only
/// with replicas; one process knows every live session).
async fn stored_session(app: &AppState, key: String, by_id: bool) -> Result<Option<Arc<Session>>, ApiError> {
    if !app.db.shared() {
        return Ok(None);
    }
    let a = app.clone();
    crate::api::blocking(move || a.load_session(&key, by_id)).await
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(app, &parts.headers).await
    }
}

/// An edge credential (`--edge-token-file`): reaches only `/api/edge/*`.
#[derive(Debug, Clone, Copy)]
pub struct EdgeCaller;

impl FromRequestParts<AppState> for EdgeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let token = token_of(&parts.headers)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthenticated("missing edge credential"))?;
        if app.cfg.edge_tokens.contains(&crate::auth::digest(token)) {
            return Ok(EdgeCaller);
        }
        if authenticate(app, &parts.headers).await.is_ok() {
            return Err(ApiError::Denied("FORBIDDEN".into(), "user tokens do not reach /api/edge".into()));
        }
        Err(ApiError::Unauthenticated("unknown edge credential"))
    }
}

/// The client's address (for throttling): the TCP peer, or — when the peer is a proxy named by
/// `--trusted-proxy` — the last address of its `X-Forwarded-For` (the one it appended).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let forwarded = || {
            let v = parts.headers.get_all("x-forwarded-for").iter().next_back()?.to_str().ok()?;
            v.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
        };
        Ok(ClientAddr(match peer {
            Some(ip) if app.cfg.trusted_proxies.contains(&ip) => forwarded().or(Some(ip)),
            other => other,
        }))
    }
}

/// A strict JSON body: `application/json` only, UTF-8, the target type's schema. A refused
/// body is answered with `Connection: close`.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let text = body_text(req, state).await?;
        serde_json::from_str(&text).map(Json).map_err(|e| {
            let code = if e.is_data() { "INVALID_REQUEST" } else { "INVALID_JSON" };
            ApiError::BadRequest(code, e.to_string())
        })
    }
}

/// A JSON body kept as text (commands are parsed by the engine, which names the bad field).
pub struct JsonText(pub String);

impl<S: Send + Sync> FromRequest<S> for JsonText {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let text = body_text(req, state).await?;
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| ApiError::BadRequest("INVALID_JSON", e.to_string()))?;
        Ok(JsonText(text))
    }
}

async fn body_text<S: Send + Sync>(req: Request, state: &S) -> Result<String, ApiError> {
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")) {
        return Err(ApiError::RefusedBody(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send `content-type: application/json`".into(),
        ));
    }
    let bytes = Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::RefusedBody(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "the body could not be read".into())
        }
    })?;
    String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::BadRequest("INVALID_JSON", "body is not UTF-8".into()))
}

/// The refusal of a body over the limit.
pub fn too_large() -> ApiError {
    ApiError::RefusedBody(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("bodies are limited to {} bytes", crate::api::MAX_BODY),
    )
}
