//! The attack suite (issue: "the server as an authority you can trust"): each attack that was
//! tried against the server, over real HTTP on loopback, now refused — with its status and code,
//! and the database unchanged where nothing should change. Plus a bounded soak run that prints
//! its latency and memory figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CLAIM: &str = "CLAIM-SECRET-7788";

fn world() -> Value {
    let file = vector("manufacturer.json");
    let mut seed = seed_of(&file["snapshot"]);
    seed["claimCodes"] = json!({"eu-demo": CLAIM, "lab-1": "LAB-SECRET-4411"});
    seed
}

fn login_status(server: &Server, email: &str, password: &str) -> (u16, Value, Option<String>) {
    match ureq::post(&server.url("/api/login")).send_json(json!({"email": email, "password": password})) {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null), None),
        Err(ureq::Error::Status(code, r)) => {
            let retry = r.header("retry-after").map(str::to_owned);
            (code, r.into_json().unwrap_or(Value::Null), retry)
        }
        Err(e) => panic!("transport: {e}"),
    }
}

fn addr_of(server: &Server) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// A raw HTTP/1.1 exchange from a chosen loopback source address; returns the head and body.
fn raw_from(source: [u8; 4], server: &Server, request: &str) -> (u16, String) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&addr_of(server).into()).unwrap();
    let mut tcp: TcpStream = socket.into();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before it read everything (a refused body).
    let _ = tcp.write_all(request.as_bytes());
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn login_request(email: &str, password: &str) -> String {
    login_request_via(email, password, None)
}

/// A login request, optionally with the `X-Forwarded-For` a proxy would add.
fn login_request_via(email: &str, password: &str, forwarded_for: Option<&str>) -> String {
    let body = json!({"email": email, "password": password}).to_string();
    let xff = forwarded_for.map(|a| format!("X-Forwarded-For: {a}\r\n")).unwrap_or_default();
    format!(
        "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{xff}Connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn db_bytes(server: &Server) -> Vec<u8> {
    server.store().all_bytes()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn audit_rows(server: &Server) -> i64 {
    server.store().query_i64("SELECT CAST(count(*) AS BIGINT) FROM audit")
}

#[test]
fn throttled_logins_and_claims() {
    let server = Server::start("throttle", Some(&world()));
    // Five wrong passwords pass through to the hash; the sixth attempt is refused before it,
    // even with the right password.
    for _ in 0..5 {
        assert_eq!(login_status(&server, "ceo@example.test", "wrong").0, 401);
    }
    let (s, b, retry) = login_status(&server, "ceo@example.test", PASSWORD);
    assert_eq!((s, b["error"]["code"].as_str()), (429, Some("TOO_MANY_ATTEMPTS")));
    assert!(retry.and_then(|r| r.parse::<u64>().ok()).is_some_and(|r| r > 0 && r <= 900));
    // Another account is not affected.
    assert_eq!(login_status(&server, "eu-admin@example.test", PASSWORD).0, 200);
    // An unknown email costs a hash too: compare with a known one (printed; a 10x gap fails).
    let time = |email: &str| {
        let t = Instant::now();
        let _ = login_status(&server, email, "wrong");
        t.elapsed()
    };
    let known = time("north-staff@example.test");
    let unknown = time("nobody-here@example.test");
    println!("login with a wrong password: known email {known:?}, unknown email {unknown:?}");
    assert!(unknown * 10 > known, "unknown emails answer far faster: {unknown:?} vs {known:?}");
    // One address: 50 failures a minute, then 429 for any account from it, while another
    // address still signs in.
    for i in 0..50 {
        let (s, _) = raw_from([127, 0, 0, 3], &server, &login_request(&format!("spray{i}@example.test"), "x"));
        assert_eq!(s, 401, "attempt {i}");
    }
    let (s, text) = raw_from([127, 0, 0, 3], &server, &login_request("jones@example.test", PASSWORD));
    assert_eq!(s, 429, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after:"));
    let (s, _) = raw_from([127, 0, 0, 4], &server, &login_request("jones@example.test", PASSWORD));
    assert_eq!(s, 200);
    // Claim codes: five wrong codes for a device, then 429; the stored code is untouched and
    // no entry keeps a code.
    let kim = server.login("kim");
    let before = audit_rows(&server);
    for i in 0..5 {
        let (s, b) = server.post(
            &kim,
            "/api/commands",
            &json!({"op": "claimDevice", "device": "eu-demo", "code": format!("GUESS-{i}"), "org": "client-kim"}),
        );
        assert_eq!((s, b["error"]["code"].as_str()), (403, Some("DENY_INVALID_TARGET")), "{b}");
    }
    let (s, b) = server.post(
        &kim,
        "/api/commands",
        &json!({"op": "claimDevice", "device": "eu-demo", "code": CLAIM, "org": "client-kim"}),
    );
    assert_eq!((s, b["error"]["code"].as_str()), (429, Some("TOO_MANY_ATTEMPTS")));
    assert_eq!(audit_rows(&server), before + 5);
    let bytes = db_bytes(&server);
    assert!(!contains(&bytes, "GUESS-0") && !contains(&bytes, CLAIM), "a claim code is stored in the clear");
}

/// Behind a trusted proxy (an edge), the client address throttling counts is the one the proxy
/// appended to `X-Forwarded-For`; from any other peer the header is ignored.
#[test]
fn throttling_behind_a_trusted_proxy() {
    let server = Server::start_with("proxy", Some(&world()), &["--trusted-proxy", "127.0.0.5"]);
    let via = |from: [u8; 4], client: &str, email: &str, pw: &str| {
        raw_from(from, &server, &login_request_via(email, pw, Some(client))).0
    };
    for i in 0..50 {
        assert_eq!(via([127, 0, 0, 5], "192.0.2.7", &format!("spray{i}@example.test"), "x"), 401);
    }
    // That client is throttled; another client behind the same proxy is not.
    assert_eq!(via([127, 0, 0, 5], "192.0.2.7", "jones@example.test", PASSWORD), 429);
    assert_eq!(via([127, 0, 0, 5], "spoofed, 192.0.2.8", "jones@example.test", PASSWORD), 200);
    // An untrusted peer cannot pick its address with the header.
    for i in 0..50 {
        assert_eq!(via([127, 0, 0, 6], &format!("192.0.2.{}", 100 + i), &format!("spray{i}@example.test"), "x"), 401);
    }
    assert_eq!(via([127, 0, 0, 6], "192.0.2.200", "jones@example.test", PASSWORD), 429);
}

/// Reads an SSE stream until it ends; returns how long after `since` it ended.
fn stream_end(
    res: ureq::Response,
    since: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
) -> std::sync::mpsc::Receiver<Duration> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for _ in BufReader::new(res.into_reader()).lines().map_while(Result::ok) {}
        let at = since.lock().unwrap().map(|t| t.elapsed()).unwrap_or_default();
        let _ = tx.send(at);
    });
    rx
}

fn open_events(server: &Server, token: &str) -> ureq::Response {
    ureq::get(&server.url("/api/events")).set("Authorization", &format!("Bearer {token}")).call().unwrap()
}

#[test]
fn sessions_end_and_streams_close() {
    let server = Server::start_with("sessions", Some(&world()), &["--session-seconds", "8"]);
    let ceo = server.login("ceo");
    // Logout: the session token, its access token and its stream all die at once.
    let kid = server.login("jones-kid");
    let (s, t) = server.post(&kid, "/api/token", &json!({}));
    assert_eq!(s, 200);
    let access = t["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(server.get(&access, "/api/me").0, 200);
    let mark = std::sync::Arc::new(std::sync::Mutex::new(None));
    let ended = stream_end(open_events(&server, &kid), mark.clone());
    *mark.lock().unwrap() = Some(Instant::now());
    assert_eq!(server.post(&kid, "/api/logout", &json!({})).0, 200);
    let after = ended.recv_timeout(Duration::from_secs(5)).expect("the stream outlived its session");
    println!("event stream closed {after:?} after logout");
    assert!(after < Duration::from_secs(1));
    for token in [&kid, &access] {
        let (s, b) = server.get(token, "/api/me");
        assert_eq!((s, b["error"]["code"].as_str()), (401, Some("UNAUTHENTICATED")));
    }
    // Suspension ends every session of the user, and reactivation does not revive them.
    let a = server.login("north-staff");
    let b = server.login("north-staff");
    let mark = std::sync::Arc::new(std::sync::Mutex::new(Some(Instant::now())));
    let ended = stream_end(open_events(&server, &b), mark);
    assert_eq!(server.post(&ceo, "/api/commands", &json!({"op": "suspendUser", "user": "north-staff"})).0, 200);
    assert!(
        ended.recv_timeout(Duration::from_secs(5)).expect("stream outlived the suspension") < Duration::from_secs(2)
    );
    assert_eq!(server.get(&a, "/api/devices").0, 401);
    assert_eq!(server.post(&ceo, "/api/commands", &json!({"op": "reactivateUser", "user": "north-staff"})).0, 200);
    assert_eq!(server.get(&a, "/api/me").0, 401);
    assert_eq!(server.get(&b, "/api/me").0, 401);
    assert!(server.try_login("north-staff").is_some());
    // Removal from the last membership ends the sessions too.
    let kim = server.login("kim");
    assert_eq!(
        server.post(&ceo, "/api/commands", &json!({"op": "removeMember", "user": "kim", "org": "client-kim"})).0,
        200
    );
    assert_eq!(server.get(&kim, "/api/me").0, 401);
    // Expiry (sessions last 8 s here): the token stops working and its stream closes.
    let short = server.login("eu-admin");
    let mark = std::sync::Arc::new(std::sync::Mutex::new(Some(Instant::now())));
    let ended = stream_end(open_events(&server, &short), mark);
    ended.recv_timeout(Duration::from_secs(15)).expect("the stream outlived its session's expiry");
    let (s, b) = server.get(&short, "/api/me");
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("UNAUTHENTICATED")));
}

#[test]
fn etags_are_per_viewer_and_bodies_are_refused_cleanly() {
    let server = Server::start("etag", Some(&world()));
    let a = server.login("ceo");
    let b = server.login("jones");
    let head = |token: &str, inm: Option<&str>| {
        let mut req = ureq::get(&server.url("/api/snapshot")).set("Authorization", &format!("Bearer {token}"));
        if let Some(t) = inm {
            req = req.set("If-None-Match", t);
        }
        let r = req.call().unwrap();
        (r.status(), r.header("etag").unwrap_or("").to_owned(), r.header("vary").unwrap_or("").to_owned())
    };
    let (_, tag_a, vary) = head(&a, None);
    let (_, tag_b, _) = head(&b, None);
    assert_ne!(tag_a, tag_b);
    assert!(vary.contains("Authorization") && vary.contains("Cookie"));
    assert_eq!(head(&b, Some(&tag_a)).0, 200, "another viewer's ETag must not give a 304");
    assert_eq!(head(&b, Some(&tag_b)).0, 304);
    assert_eq!(head(&b, Some(&format!("\"{}\"", server.revision()))).0, 200, "a bare revision is no ETag");
    // A 2 MiB body: 413 with the JSON error and `Connection: close`; the next request works.
    // (Only the head is sent: the refusal comes from the declared length, before any upload.)
    let (s, text) = raw_from(
        [127, 0, 0, 1],
        &server,
        &format!("POST /api/commands HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", 2 << 20),
    );
    assert_eq!(s, 413);
    assert!(text.to_ascii_lowercase().contains("connection: close"), "{}", text.get(..300).unwrap_or(""));
    assert!(text.contains("PAYLOAD_TOO_LARGE"));
    let (s, text) = raw_from(
        [127, 0, 0, 1],
        &server,
        "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(s, 415);
    assert!(text.to_ascii_lowercase().contains("connection: close"));
    // Huge headers are refused and the server keeps serving.
    let huge = "a".repeat(100_000);
    let (s, _) =
        raw_from([127, 0, 0, 1], &server, &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n"));
    assert!(s == 431 || s == 0 || s == 400, "huge headers got {s}");
    // Security headers on API answers and on the dashboard's files.
    for path in ["/healthz", "/api/no-such-endpoint"] {
        let r = match ureq::get(&server.url(path)).call() {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert!(r.header("content-security-policy").is_some_and(|c| c.contains("frame-ancestors 'none'")), "{path}");
    }
    let (s, b) = server.get("garbage.token.value", "/api/me");
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("UNAUTHENTICATED")));
}

#[test]
fn secrets_stay_secret_and_invitations_end() {
    let server = Server::start_with("secrets", Some(&world()), &["--invite-days", "7"]);
    let ceo = server.login("ceo");
    let (s, inv) = server.post(
        &ceo,
        "/api/commands",
        &json!({"op": "invite", "email": "new@example.test", "org": "acme", "role": "User"}),
    );
    assert_eq!(s, 200, "{inv}");
    let link = inv["acceptLink"].as_str().unwrap().to_owned();
    let token = link.trim_start_matches("/#accept=").to_owned();
    // Not in the log, the database or the outbox (outside --demo).
    let log = std::fs::read_to_string(format!("{}.log", server.db.display())).unwrap_or_default();
    assert!(!log.contains(&token), "the invite token was logged");
    assert!(!contains(&db_bytes(&server), &token), "the invite token is stored in the clear");
    assert!(!contains(&db_bytes(&server), &ceo), "a session token is stored in the clear");
    // removeMember of the pending member revokes the invitation.
    let uid = inv["userId"].as_str().unwrap();
    assert_eq!(server.post(&ceo, "/api/commands", &json!({"op": "removeMember", "user": uid, "org": "acme"})).0, 200);
    let (s, b) = status_json(
        ureq::post(&server.url("/api/invites/accept")).send_json(json!({"token": token, "password": "long-enough-1"})),
    );
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("UNKNOWN_INVITE")));
    // A claim code dies when its device gets an owner, even if the owner leaves again.
    let eu = server.login("eu-admin");
    let (s, b) =
        server.post(&eu, "/api/commands", &json!({"op": "transferDevice", "device": "eu-demo", "owner": "eu-office"}));
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        server.post(&ceo, "/api/commands", &json!({"op": "removeMember", "user": "eu-office", "org": "acme-eu"})).0,
        200
    );
    let multi = server.login("multi");
    let (s, b) = server.post(
        &multi,
        "/api/commands",
        &json!({"op": "claimDevice", "device": "eu-demo", "code": CLAIM, "org": "acme-eu"}),
    );
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("DENY_INVALID_TARGET")), "{b}");
    // An expired invitation is refused (a server whose invitations last 0 days).
    let short = Server::start_with("secrets-exp", Some(&world()), &["--invite-days", "0"]);
    let ceo = short.login("ceo");
    let (_, inv) = short.post(
        &ceo,
        "/api/commands",
        &json!({"op": "invite", "email": "late@example.test", "org": "acme", "role": "User"}),
    );
    let token = inv["acceptLink"].as_str().unwrap().trim_start_matches("/#accept=").to_owned();
    let (s, b) = status_json(
        ureq::post(&short.url("/api/invites/accept")).send_json(json!({"token": token, "password": "long-enough-1"})),
    );
    assert_eq!((s, b["error"]["code"].as_str()), (410, Some("INVITE_EXPIRED")));
}

#[test]
fn audit_shows_only_what_the_reader_may_see() {
    let mut seed = world();
    for org in seed["snapshot"]["orgs"].as_array_mut().unwrap() {
        if org["id"] == "globex" {
            org["plan"] = json!("pro"); // so its admin may create sub-orgs
        }
    }
    let server = Server::start("audit", Some(&seed));
    let globex = server.login("globex-admin");
    let ceo = server.login("ceo");
    let eu = server.login("eu-admin");
    // An attacker naming another tenant's org writes nothing into that tenant's view.
    let perms: Vec<String> = (0..20_000).map(|i| format!("perm.{i}")).collect();
    for _ in 0..3 {
        let (s, b) = server.post(
            &globex,
            "/api/commands",
            &json!({"op": "createOrg", "id": "spam", "name": "n".repeat(200), "parent": "acme"}),
        );
        assert_eq!(s, 403, "{b}");
        let (s, _) = server.post(
            &globex,
            "/api/commands",
            &json!({"op": "setRolePermissions", "org": "acme", "role": "Staff", "permissions": perms}),
        );
        assert!(s == 403 || s == 400, "{s}");
    }
    let (_, list) = server.get(&ceo, "/api/audit");
    assert!(list.as_array().unwrap().iter().all(|e| e["actor"] != "globex-admin"), "{list}");
    let longest = server.store().query_i64("SELECT CAST(max(length(detail)) AS BIGINT) FROM audit");
    assert!(longest < 4096, "an audit entry kept {longest} bytes");
    // Device-command entries do not reveal the granting membership.
    let jones = server.login("jones");
    assert_eq!(server.post(&jones, "/api/devices/jones-thermo/commands", &json!({"name": "on"})).0, 202);
    let (_, list) = server.get(&jones, "/api/audit");
    let entry = list.as_array().unwrap().iter().find(|e| e["action"] == "device.command").cloned().unwrap();
    assert!(entry["detail"].get("decision").is_none() && !entry.to_string().contains("\"role\""), "{entry}");
    // A parent-org actor is hidden from a sub-org's reader.
    assert_eq!(server.post(&ceo, "/api/devices/jones-thermo/commands", &json!({"name": "off"})).0, 202);
    let (_, list) = server.get(&jones, "/api/audit");
    assert!(list.as_array().unwrap().iter().all(|e| e["actor"] != "ceo"), "{list}");
    // A deleted org's history is not handed to whoever re-creates its id.
    assert_eq!(
        server
            .post(&eu, "/api/commands", &json!({"op": "createOrg", "id": "reused", "name": "R", "parent": "acme-eu"}))
            .0,
        200
    );
    assert_eq!(
        server
            .post(
                &eu,
                "/api/commands",
                &json!({"op": "invite", "email": "r@example.test", "org": "reused", "role": "User"})
            )
            .0,
        200
    );
    let (_, before) = server.get(&eu, "/api/audit");
    assert!(before.as_array().unwrap().iter().any(|e| e["org"] == "reused"));
    let (_, me) = server.get(&eu, "/api/audit");
    let pending = me.as_array().unwrap().iter().find(|e| e["action"] == "invite").unwrap()["detail"]["userId"]
        .as_str()
        .map(str::to_owned);
    if let Some(uid) = pending {
        assert_eq!(
            server.post(&eu, "/api/commands", &json!({"op": "removeMember", "user": uid, "org": "reused"})).0,
            200
        );
    }
    let (s, b) = server.post(&eu, "/api/commands", &json!({"op": "deleteOrg", "org": "reused"}));
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        server
            .post(
                &globex,
                "/api/commands",
                &json!({"op": "createOrg", "id": "reused", "name": "Mine", "parent": "globex"})
            )
            .0,
        200
    );
    let (_, list) = server.get(&globex, "/api/audit");
    let leaked: Vec<&Value> =
        list.as_array().unwrap().iter().filter(|e| e["org"] == "reused" && e["actor"] != "globex-admin").collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

/// The soak run: 8 clients for a bounded time (FLEETGATE_SOAK_SECONDS, default 20) mixing
/// commands, catch-ups, audit reads, an event stream, a 304 prober and bad logins from another
/// address, while a legitimate client keeps signing in. Prints latencies and memory.
#[test]
fn soak() {
    let seconds: u64 = std::env::var("FLEETGATE_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let server = Server::start("soak", Some(&world()));
    let pid = server.child.id();
    let rss = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let rss_start = rss();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let ceo = server.login("ceo");
    let eu = server.login("eu-admin");
    let jones = server.login("jones");
    let start_rev = server.revision();
    let (health, not_modified, legit, throttled, commands) = std::thread::scope(|s| {
        // Writers: move a device back and forth, rename a sub-org.
        let writers: Vec<_> = [("north-stock-1", "dist-north", "acme-eu"), ("us-1", "acme-us", "acme")]
            .into_iter()
            .map(|(device, a, b)| {
                let (server, ceo) = (&server, &ceo);
                s.spawn(move || {
                    let mut n = 0u64;
                    let mut flip = false;
                    while Instant::now() < deadline {
                        let org = if flip { a } else { b };
                        let (st, body) = server.post(
                            ceo,
                            "/api/commands",
                            &json!({"op": "moveDevice", "device": device, "org": org}),
                        );
                        assert_eq!(st, 200, "{body}");
                        flip = !flip;
                        n += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    n
                })
            })
            .collect();
        // Catch-up and audit readers.
        let reader = s.spawn(|| {
            while Instant::now() < deadline {
                let (st, _) = server.get(&eu, &format!("/api/deltas?since={start_rev}"));
                assert!(st == 200 || st == 410, "catch-up {st}");
                assert_eq!(server.get(&ceo, "/api/audit?limit=100").0, 200);
            }
        });
        // An event stream, read until the end.
        let stream = s.spawn(|| {
            let res =
                ureq::get(&server.url("/api/events")).set("Authorization", &format!("Bearer {eu}")).call().unwrap();
            let mut events = 0;
            for line in BufReader::new(res.into_reader()).lines().map_while(Result::ok) {
                if line.starts_with("event: delta") {
                    events += 1;
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            events
        });
        // Bad logins from 127.0.0.9.
        let attacker = s.spawn(|| {
            let mut throttled = 0;
            let mut i = 0;
            while Instant::now() < deadline {
                let (st, _) =
                    raw_from([127, 0, 0, 9], &server, &login_request(&format!("ceo{}@example.test", i % 3), "guess"));
                if st == 429 {
                    throttled += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                i += 1;
            }
            throttled
        });
        // A legitimate client signs in every half second from 127.0.0.1.
        let legit = s.spawn(|| {
            let mut ok = 0;
            while Instant::now() < deadline {
                let (st, _) = raw_from([127, 0, 0, 1], &server, &login_request("jones@example.test", PASSWORD));
                assert_eq!(st, 200, "a legitimate login was refused during the attack");
                ok += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            ok
        });
        // Probers: /healthz and a 304 snapshot.
        let prober = s.spawn(|| {
            let agent = ureq::AgentBuilder::new().build();
            let snap = |tag: &str| {
                agent
                    .get(&server.url("/api/snapshot"))
                    .set("Authorization", &format!("Bearer {jones}"))
                    .set("If-None-Match", tag)
                    .call()
                    .unwrap()
            };
            let mut etag = snap("none").header("etag").unwrap().to_owned();
            let (mut h, mut nm) = (Vec::new(), Vec::new());
            while Instant::now() < deadline {
                let t = Instant::now();
                assert_eq!(agent.get(&server.url("/healthz")).call().unwrap().status(), 200);
                h.push(t.elapsed());
                let t = Instant::now();
                let r = snap(&etag);
                if r.status() == 304 {
                    nm.push(t.elapsed());
                } else {
                    etag = r.header("etag").unwrap().to_owned();
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (h, nm)
        });
        let commands: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        reader.join().unwrap();
        let events = stream.join().unwrap();
        println!("soak: {events} events on one stream");
        let (h, nm) = prober.join().unwrap();
        (h, nm, legit.join().unwrap(), attacker.join().unwrap(), commands)
    });
    let pct = |v: &[Duration], p: f64| {
        let mut v = v.to_vec();
        v.sort();
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    let rss_end = rss();
    println!(
        "soak {seconds} s: {commands} commands; /healthz p50 {:?} p99 {:?} ({} probes); 304 snapshot p50 {:?} p99 {:?} ({}); \
         {legit} legitimate logins all succeeded; {throttled} attacker attempts throttled; RSS {} -> {} KiB",
        pct(&health, 0.5),
        pct(&health, 0.99),
        health.len(),
        pct(&not_modified, 0.5),
        pct(&not_modified, 0.99),
        not_modified.len(),
        rss_start,
        rss_end
    );
    assert!(throttled > 0, "the attacker was never throttled");
    assert!(legit > 0 && commands > 0 && !not_modified.is_empty());
    assert!(rss_end < rss_start + 256 * 1024, "memory grew from {rss_start} to {rss_end} KiB");
}

/// A store failure mid-commit (the change log locked by another process past the busy or lock
/// timeout) is a 503 `UNAVAILABLE` (try again) with a generic message; the engine does not move
/// ahead of the database, and the next command, once the database is free, commits normally (no
/// 409 cascade).
#[test]
fn a_failed_commit_changes_nothing() {
    let server = Server::start("split", Some(&world()));
    let ceo = server.login("ceo");
    let rev = server.revision();
    let lock = server.store().lock_changes();
    let (s, b) = server.post(&ceo, "/api/commands", &json!({"op": "moveDevice", "device": "lab-1", "org": "acme-eu"}));
    assert_eq!((s, b["error"]["code"].as_str()), (503, Some("UNAVAILABLE")), "{b}");
    assert_eq!(b["error"]["message"], "the store is unavailable; try again", "internal detail reached the client");
    assert_eq!(server.revision(), rev, "the engine moved ahead of the database");
    drop(lock);
    let (_, devices) = server.get(&ceo, "/api/devices?activeOrg=acme-eu");
    assert!(!devices.as_array().unwrap().iter().any(|d| d == "lab-1"), "a failed move is visible");
    let (s, b) = server.post(&ceo, "/api/commands", &json!({"op": "moveDevice", "device": "lab-1", "org": "acme-eu"}));
    assert_eq!((s, b["revision"].as_u64()), (200, Some(rev + 1)), "{b}");
    let stored =
        server.store().query_i64(&format!("SELECT CAST(count(*) AS BIGINT) FROM changes WHERE revision = {}", rev + 1));
    assert_eq!(stored, 1);
}
