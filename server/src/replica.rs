//! Keeping a replica current (SPEC §9): a dedicated PostgreSQL connection `LISTEN`s for the
//! store's notifications — a change's revision on `fleetgate_changes`, an ended session's id
//! on `fleetgate_sessions` — and the replica applies them:
//!
//! - a change notification (or the one-second poll, which heals a lost notification) runs
//!   [`App::catch_up`]: the change rows after the published revision, applied and fanned out
//!   in order under the writer lock; a notification is a hint, the change log is the truth;
//! - a session notification forgets the session here (its tokens stop working, its streams
//!   close); the poll also reads the store's recently ended sessions, in case one was missed.
//!
//! **Readiness.** The replica answers only while it is current: it is marked not ready when
//! the listening connection drops or a catch-up fails, and ready again only after it has
//! reconnected, listened again and caught up with the head; and it counts as current only for
//! 3 s after it last reached the head (the poll reaches it every second), so a store that
//! stops answering without closing the connection makes it not ready within seconds. Until then `/healthz` says so
//! (503) and `/api` requests are refused with 503 `UNAVAILABLE` and `Retry-After: 1`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::state::AppState;
use crate::store::{now, pg};

/// Starts the listener for the store at `url`.
pub fn spawn(app: AppState, url: String) {
    tokio::spawn(async move {
        let cfg = match pg::config(&url) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("change listener: {e}");
                return;
            }
        };
        let mut backoff = Duration::from_millis(100);
        // Kept across reconnections: sessions ended elsewhere during an outage are swept on
        // return, however long it lasted.
        let mut swept = now() - 5;
        loop {
            match listen(&app, &cfg, &mut swept).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => tracing::warn!("change listener: {e}"),
            }
            app.set_ready(false);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    });
}

/// One listening connection's life: connect, listen, catch up, then serve notifications until
/// the connection (or a catch-up) fails. Catch-ups run in their own task (they wait for the
/// writer lock), so session notifications are never queued behind them.
async fn listen(app: &AppState, cfg: &tokio_postgres::Config, swept: &mut i64) -> Result<(), String> {
    let (client, mut conn) = tokio::time::timeout(Duration::from_secs(5), cfg.connect(NoTls))
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(msg) = messages.next().await {
            match msg {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send((n.channel().to_owned(), n.payload().to_owned())).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("change listener connection: {e}");
                    break;
                }
            }
        }
    });
    let _driver = AbortOnDrop(driver);
    client
        .batch_execute(&format!("LISTEN {}; LISTEN {}", pg::CHANGES, pg::SESSIONS))
        .await
        .map_err(|e| format!("listen: {e}"))?;
    // Listening now: whatever commits from here on is notified. Catch up with what came before.
    catch_up(app).await?;
    sweep(app, swept).await?;
    app.set_ready(true);
    tracing::info!("change listener: listening, current at revision {}", app.engine().revision());
    let wake = Arc::new(Notify::new());
    let (failed_tx, mut failed) = tokio::sync::mpsc::channel::<String>(1);
    let worker = {
        let (app, wake) = (app.clone(), wake.clone());
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                if let Err(e) = catch_up(&app).await {
                    let _ = failed_tx.send(e).await;
                    return;
                }
            }
        })
    };
    let _worker = AbortOnDrop(worker);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            n = rx.recv() => {
                let Some(first) = n else { return Err("the listening connection closed".into()) };
                let mut ended = Vec::new();
                let mut note = |(channel, payload): (String, String)| {
                    if channel == pg::SESSIONS { ended.push(payload) } else { wake.notify_one() }
                };
                note(first);
                while let Ok(more) = rx.try_recv() {
                    note(more);
                }
                if !ended.is_empty() {
                    app.sessions_ended_elsewhere(&ended);
                }
            }
            _ = tick.tick() => {
                // The poll: heals a lost notification; the sweep, a lost session notice.
                wake.notify_one();
                sweep(app, swept).await?;
            }
            e = failed.recv() => return Err(e.unwrap_or_else(|| "the catch-up task ended".into())),
        }
    }
}

/// Forgets the sessions ended in the store since `swept` (with a margin for clocks).
async fn sweep(app: &AppState, swept: &mut i64) -> Result<(), String> {
    let a = app.clone();
    let (t, since) = (now(), *swept);
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || {
            let ended = a.db.ended_since(since - 2).map_err(|e| e.message)?;
            a.sessions_ended_elsewhere(&ended);
            Ok::<(), String>(())
        }),
    )
    .await
    .map_err(|_| "the session sweep timed out".to_owned())?
    .map_err(|e| e.to_string())??;
    *swept = t;
    Ok(())
}

async fn catch_up(app: &AppState) -> Result<(), String> {
    let a = app.clone();
    match tokio::task::spawn_blocking(move || a.catch_up()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("catch-up: {e:?}")),
        Err(e) => Err(format!("catch-up: {e}")),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
