//! The edge endpoints of SPEC §7.1: the full signed snapshot, signed full deltas, the event
//! stream of signed deltas, revocations and renewals, and the recently revoked sessions. Only
//! edge credentials reach them ([`EdgeCaller`]).

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use fleetgate::Delta;
use serde_json::json;

use crate::api::{
    ahead, blocking, cache_headers, etag_matches, event_stream, gone, heavy, resume_from, sign_doc, since_of,
    SinceQuery,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::EdgeCaller;
use crate::state::{App, AppState};
use crate::store::now;

/// How long an ended session is listed by `/api/edge/revoked` (the longest access-token life).
pub const REVOKED_SECONDS: i64 = 300;

fn envelope(body: String) -> Response {
    let mut res = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `GET /api/edge/snapshot`: the full snapshot (`viewer: null`) as a signed envelope.
pub async fn snapshot(State(app): State<AppState>, _: EdgeCaller, headers: HeaderMap) -> ApiResult<Response> {
    let engine = app.engine();
    let tag = format!("\"{}-full\"", engine.revision());
    if etag_matches(&headers, &tag) {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        cache_headers(&mut res, &tag);
        return Ok(res);
    }
    let a = app.clone();
    let body = heavy(&app, move || Ok(sign_doc(&a, engine.to_doc()))).await?;
    let mut res = envelope(body);
    cache_headers(&mut res, &tag);
    Ok(res)
}

/// The full delta from `since` to `upto` as one delta: the stored deltas' ops in order.
fn merged(app: &App, since: u64, upto: u64) -> ApiResult<Option<Delta>> {
    let Some(list) = app.db.deltas_between(since, upto)? else { return Ok(None) };
    let ops = list.into_iter().flat_map(|d| d.ops).collect();
    Ok(Some(Delta::new(since, upto, ops)))
}

/// `GET /api/edge/deltas?since=N`: one signed envelope of the full delta N → now; 204 when N
/// is current, 410 when the change log no longer reaches N.
pub async fn deltas(State(app): State<AppState>, _: EdgeCaller, Query(q): Query<SinceQuery>) -> ApiResult<Response> {
    let since = since_of(&q)?;
    let rev = app.engine().revision();
    if since == rev {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if since > rev {
        return Err(ahead(since, rev));
    }
    let a = app.clone();
    let delta = heavy(&app, move || merged(&a, since, rev)).await?.ok_or_else(|| gone(since, "/api/edge/snapshot"))?;
    let body = app.sign_delta(&delta).ok_or_else(|| ApiError::Internal("signing a delta".into()))?;
    Ok(envelope(body))
}

/// `GET /api/edge/events`: signed full deltas (`event: delta`, `id:` its `to`), revocations
/// (`event: revoked`) and renewals at least every `--renew-seconds`. With `Last-Event-ID` (or
/// `?since=`) behind the current revision, the stream starts with the merged delta since then.
pub async fn events(
    State(app): State<AppState>,
    _: EdgeCaller,
    headers: HeaderMap,
    Query(q): Query<SinceQuery>,
) -> ApiResult<Response> {
    let since = resume_from(&headers, &q);
    let (rx, start) = app.subscribe_edge()?;
    let first: Option<Event> = match since.filter(|n| *n < start) {
        Some(since) => {
            let a = app.clone();
            Some(match heavy(&app, move || merged(&a, since, start)).await? {
                Some(d) => {
                    let env = app.sign_delta(&d).ok_or_else(|| ApiError::Internal("signing a delta".into()))?;
                    Event::default().id(start.to_string()).event("delta").data(env)
                }
                None => Event::default().event("resync").data(json!({"revision": start}).to_string()),
            })
        }
        None => None,
    };
    Ok(event_stream(first, rx))
}

/// `GET /api/edge/revoked`: the sessions that ended less than five minutes ago.
pub async fn revoked(State(app): State<AppState>, _: EdgeCaller) -> ApiResult<Response> {
    let a = app.clone();
    let sessions = blocking(move || Ok(a.db.ended_since(now() - REVOKED_SECONDS)?)).await?;
    let mut res = axum::Json(json!({"sessions": sessions})).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}
