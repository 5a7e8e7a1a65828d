//! The server's one error type. Each variant has its status and the SPEC's stable code; the
//! body is always `{"error": {"code", "message"}}`. Internal failures are logged with their
//! detail and answered with a generic message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// An API error.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with a code of the request's own (`INVALID_JSON`, `INVALID_REQUEST`, `INVALID_ARGUMENT`, …).
    BadRequest(&'static str, String),
    /// A refused body (too large, wrong media type): answered, then the connection is closed.
    RefusedBody(StatusCode, &'static str, String),
    /// 401 `UNAUTHENTICATED`: no, an invalid or an ended token.
    Unauthenticated(&'static str),
    /// 401 `INVALID_CREDENTIALS`: unknown email or wrong password.
    InvalidCredentials,
    /// 403 with a decision code (`DENY_*`), or `FORBIDDEN` for a credential of the wrong kind.
    Denied(String, String),
    /// 404 with a code.
    NotFound(&'static str, String),
    /// 409 with a code (revision or state conflicts).
    Conflict(&'static str, String),
    /// 410 with a code (a revision too old, an expired invitation).
    Gone(&'static str, String),
    /// 429 `TOO_MANY_ATTEMPTS` with `Retry-After` seconds.
    Throttled(u64),
    /// 503 `UNAVAILABLE`: the server is busy (a bounded queue is full).
    Busy,
    /// 503 `UNAVAILABLE`: this replica is catching up with the store (SPEC §9).
    NotReady,
    /// 503 `UNAVAILABLE`: the store is unreachable or busy for now (logged with its detail).
    StoreUnavailable(String),
    /// An engine error (`INVALID_COMMAND`, invariant codes, …) with its status.
    Engine(fleetgate::Error),
    /// 500: logged, answered generically.
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.unavailable {
            ApiError::StoreUnavailable(e.message)
        } else {
            ApiError::Internal(e.message)
        }
    }
}

impl From<fleetgate::Error> for ApiError {
    fn from(e: fleetgate::Error) -> Self {
        ApiError::Engine(e)
    }
}

impl ApiError {
    /// A denial with the decision code.
    pub fn denied(code: &str) -> Self {
        ApiError::Denied(code.to_owned(), format!("denied: {code}"))
    }

    /// The status and code of the error.
    pub fn status_code(&self) -> (StatusCode, &str) {
        use fleetgate::ErrorCode as C;
        match self {
            ApiError::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code),
            ApiError::RefusedBody(status, code, _) => (*status, code),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            ApiError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"),
            ApiError::Denied(code, _) => (StatusCode::FORBIDDEN, code),
            ApiError::NotFound(code, _) => (StatusCode::NOT_FOUND, code),
            ApiError::Conflict(code, _) => (StatusCode::CONFLICT, code),
            ApiError::Gone(code, _) => (StatusCode::GONE, code),
            ApiError::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_ATTEMPTS"),
            ApiError::Busy | ApiError::NotReady | ApiError::StoreUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            ApiError::Engine(e) => {
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
                (status, e.code())
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::BadRequest(_, m)
            | ApiError::RefusedBody(_, _, m)
            | ApiError::Denied(_, m)
            | ApiError::NotFound(_, m)
            | ApiError::Conflict(_, m)
            | ApiError::Gone(_, m) => m.clone(),
            ApiError::Unauthenticated(why) => (*why).to_owned(),
            ApiError::InvalidCredentials => "unknown email or wrong password".to_owned(),
            ApiError::Throttled(s) => format!("too many failed attempts; try again in {s} s"),
            ApiError::Busy => "the server is busy; try again".to_owned(),
            ApiError::NotReady => "this replica is catching up with the store; try again".to_owned(),
            ApiError::StoreUnavailable(_) => "the store is unavailable; try again".to_owned(),
            ApiError::Engine(e) => e.message().to_owned(),
            ApiError::Internal(_) => "internal error".to_owned(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(detail) => tracing::error!("internal error: {detail}"),
            ApiError::StoreUnavailable(detail) => tracing::warn!("store unavailable: {detail}"),
            _ => {}
        }
        let (status, code) = self.status_code();
        let body = json!({"error": {"code": code, "message": self.message()}});
        let mut res = (status, axum::Json(body)).into_response();
        let h = res.headers_mut();
        match &self {
            ApiError::Throttled(s) => {
                if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                    h.insert(header::RETRY_AFTER, v);
                }
            }
            ApiError::RefusedBody(..) => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::Busy | ApiError::NotReady | ApiError::StoreUnavailable(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        res
    }
}

/// A handler result.
pub type ApiResult<T> = Result<T, ApiError>;
