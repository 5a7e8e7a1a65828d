//! The server over real HTTP on 127.0.0.1: conformance vectors through the API, projections
//! and deltas against the core, an authn/authz matrix, bad input, concurrency and durability.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

use fleetgate::{Action, Engine};
use serde_json::{json, Value};

/// Replays a vector file's cases that the HTTP API can express, in order. Returns how many ran.
fn replay_over_http(file: &Value, server: &Server) -> usize {
    let snapshot = &file["snapshot"];
    let users = active_users(snapshot);
    let mut tokens: std::collections::HashMap<String, String> =
        users.iter().map(|u| (u.clone(), server.login(u))).collect();
    let mut ran = 0;
    let mut changed = false;
    for (i, case) in file["cases"].as_array().unwrap().iter().enumerate() {
        if std::mem::take(&mut changed) {
            // A suspension ends a user's sessions for good (SPEC §7.1): sign in again.
            for (user, token) in tokens.iter_mut() {
                if server.get(token, "/api/me").0 == 401 {
                    if let Some(t) = server.try_login(user) {
                        *token = t;
                    }
                }
            }
        }
        let args = case["args"].as_array().cloned().unwrap_or_default();
        let call = case["call"].as_str().unwrap();
        let who = args.first().and_then(Value::as_str).unwrap_or("");
        if call == "applyDelta" {
            // Raw deltas have no endpoint: what follows depends on one, so stop here.
            break;
        }
        // Only users who can sign in have an HTTP view; dry runs (`decide`) have no endpoint.
        let Some(token) = tokens.get(who) else { continue };
        let at = format!("case {i} ({call} {})", case["name"].as_str().unwrap_or(""));
        match call {
            "visibleDevices" => {
                let opts = args.get(1).cloned().unwrap_or(Value::Null);
                let mut path = format!("/api/devices?action={}", opts["action"].as_str().unwrap_or("view"));
                if let Some(o) = opts["activeOrg"].as_str() {
                    path.push_str(&format!("&activeOrg={o}"));
                }
                let (status, body) = server.get(token, &path);
                match case.get("error") {
                    Some(code) => assert_eq!((status, &body["error"]["code"]), (403, code), "{at}"),
                    None => assert_eq!((status, &body), (200, &case["expect"]), "{at}"),
                }
            }
            "canView" => {
                let (_, list) = server.get(token, "/api/devices?action=view");
                let seen = list.as_array().unwrap().iter().any(|d| d == &args[1]);
                assert_eq!(json!(seen), case["expect"], "{at}");
            }
            "canControl" | "explain" if call == "canControl" || args.get(2) == Some(&json!("control")) => {
                let (status, body) = server.post(
                    token,
                    &format!("/api/devices/{}/commands", args[1].as_str().unwrap()),
                    &json!({"name": "ping"}),
                );
                let allowed = if call == "canControl" {
                    case["expect"].as_bool().unwrap()
                } else {
                    case["expect"]["allowed"].as_bool().unwrap()
                };
                if allowed {
                    assert_eq!(status, 202, "{at}: {body}");
                    if call == "explain" {
                        assert_eq!(body["decision"], case["expect"], "{at}");
                    }
                } else {
                    assert_eq!(status, 403, "{at}: {body}");
                    if call == "explain" {
                        assert_eq!(body["error"]["code"], case["expect"]["code"], "{at}");
                    }
                }
            }
            "switchableOrgs" => {
                let (_, me) = server.get(token, "/api/me");
                assert_eq!(me["switchableOrgs"], case["expect"], "{at}");
            }
            "applyCommand" => {
                let (status, body) = server.post(token, "/api/commands", &args[1]);
                assert_eq!(status, 200, "{at}: {body}");
                changed = true;
                assert!(body["revision"].as_u64().is_some(), "{at}");
            }
            "project" => {
                let (status, body) = server.get(token, "/api/snapshot");
                let mut expect = case["expect"].clone();
                expect["revision"] = body["revision"].clone();
                assert_eq!((status, body), (200, expect), "{at}");
            }
            _ => continue,
        }
        ran += 1;
    }
    ran
}

#[test]
fn vectors_through_the_api() {
    let mut total = 0;
    let dir = format!("{}/../tests/vectors", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    for name in &names {
        let file = vector(name);
        if file["snapshot"].is_null() {
            continue; // loading vectors: no world to serve
        }
        let server =
            Server::start(&format!("vec-{}", name.trim_end_matches(".json")), Some(&seed_of(&file["snapshot"])));
        total += replay_over_http(&file, &server);
    }
    println!("replayed {total} vector cases over HTTP");
    assert!(total > 150, "only {total} cases replayed");
}

#[test]
fn snapshots_deltas_and_events_match_the_core() {
    let file = vector("manufacturer.json");
    let server = Server::start("proj", Some(&seed_of(&file["snapshot"])));
    let core = Engine::from_json(&file["snapshot"].to_string()).unwrap();
    let jones = server.login("jones");
    let kid = server.login("jones-kid");
    // The projection equals the core's, and ETag/304 work.
    let res = ureq::get(&server.url("/api/snapshot")).set("Authorization", &format!("Bearer {kid}")).call().unwrap();
    let etag = res.header("etag").unwrap().to_owned();
    let body: Value = res.into_json().unwrap();
    assert_eq!(body, serde_json::to_value(core.project("jones-kid")).unwrap());
    let (status, _) = status_json(
        ureq::get(&server.url("/api/snapshot"))
            .set("Authorization", &format!("Bearer {kid}"))
            .set("If-None-Match", &etag)
            .call(),
    );
    assert_eq!(status, 304);
    // Events for the family member while the owner transfers a device.
    let (tx, rx) = mpsc::channel::<Value>();
    let sse = ureq::get(&server.url("/api/events")).set("Authorization", &format!("Bearer {kid}")).call().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(sse.into_reader()).lines().map_while(Result::ok) {
            if let Some(data) = line.strip_prefix("data: ") {
                let _ = tx.send(serde_json::from_str(data).unwrap());
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200)); // let the subscription register before the change
    let (status, _) = server.post(
        &jones,
        "/api/commands",
        &json!({"op": "transferDevice", "device": "jones-thermo", "owner": "jones-kid"}),
    );
    assert_eq!(status, 200);
    let (status, _) = server.post(
        &jones,
        "/api/commands",
        &json!({"op": "moveDevice", "device": "jones-cam", "org": "jones-garage"}),
    );
    assert_eq!(status, 200);
    let mut replica = Engine::from_json(&body.to_string()).unwrap();
    for _ in 0..2 {
        let delta = rx.recv_timeout(Duration::from_secs(10)).expect("an event per change");
        replica.apply_delta_json(&delta.to_string()).unwrap();
    }
    let (_, now) = server.get(&kid, "/api/snapshot");
    assert_eq!(
        serde_json::to_value(replica.to_doc()).unwrap(),
        now,
        "events applied to the old snapshot give the new one"
    );
    assert_eq!(replica.visible_devices("jones-kid", Action::View, None).unwrap(), ["jones-thermo"]);
    // The same through /api/deltas.
    let (status, deltas) = server.get(&kid, &format!("/api/deltas?since={}", body["revision"]));
    assert_eq!(status, 200);
    let mut replica = Engine::from_json(&body.to_string()).unwrap();
    for d in deltas.as_array().unwrap() {
        replica.apply_delta_json(&d.to_string()).unwrap();
    }
    assert_eq!(serde_json::to_value(replica.to_doc()).unwrap(), now);
    let (status, none) = server.get(&kid, &format!("/api/deltas?since={}", now["revision"]));
    assert_eq!((status, none), (200, json!([])));
    // Signed snapshots verify with the published key.
    let keys: Value = ureq::get(&server.url("/.well-known/fleetgate-keys")).call().unwrap().into_json().unwrap();
    let key = &keys["keys"][0];
    let (_, env) = server.get(&kid, "/api/snapshot?signed=1");
    let set = std::collections::BTreeMap::from([(
        key["keyId"].as_str().unwrap().to_owned(),
        key["publicKey"].as_str().unwrap().to_owned(),
    )]);
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let edge = Engine::from_signed(
        &env.to_string(),
        &set,
        fleetgate::signed::VerifyOptions { now: now_s, min_revision: Some(1) },
    )
    .unwrap();
    assert!(edge.can_control("jones-kid", "jones-thermo"));
}

#[test]
fn authn_authz_and_bad_input() {
    let file = vector("manufacturer.json");
    let server = Server::start("authz", Some(&seed_of(&file["snapshot"])));
    let rev = server.revision();
    // No token, bad token, expired session.
    let (s, b) = status_json(ureq::get(&server.url("/api/me")).call());
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("UNAUTHENTICATED")));
    let (s, b) = server.get("not-a-token", "/api/snapshot");
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("UNAUTHENTICATED")));
    let (s, _) = status_json(
        ureq::post(&server.url("/api/login")).send_json(json!({"email": "ceo@example.test", "password": "wrong"})),
    );
    assert_eq!(s, 401);
    // Every command by an actor lacking the permission, escalations, other tenants.
    let staff = server.login("north-staff");
    let office = server.login("eu-office");
    let globex = server.login("globex-admin");
    let jones = server.login("jones");
    let denied = [
        (&staff, json!({"op": "createOrg", "id": "x", "name": "X", "parent": "dist-north"}), "DENY_NO_PERMISSION"),
        (
            &staff,
            json!({"op": "invite", "email": "a@b.test", "org": "dist-north", "role": "User"}),
            "DENY_NO_PERMISSION",
        ),
        (
            &staff,
            json!({"op": "setRole", "user": "pending-pat", "org": "dist-north", "role": "User"}),
            "DENY_NO_PERMISSION",
        ),
        (&staff, json!({"op": "removeMember", "user": "pending-pat", "org": "dist-north"}), "DENY_NO_PERMISSION"),
        (&staff, json!({"op": "suspendUser", "user": "kim"}), "DENY_NO_PERMISSION"),
        (&staff, json!({"op": "reactivateUser", "user": "susp-sam"}), "DENY_NO_PERMISSION"),
        (&staff, json!({"op": "addDevice", "id": "n9", "name": "N9", "org": "dist-north"}), "DENY_NO_PERMISSION"),
        (
            &staff,
            json!({"op": "transferDevice", "device": "north-stock-1", "owner": "north-staff", "org": "dist-north"}),
            "DENY_NO_PERMISSION",
        ),
        (&staff, json!({"op": "moveDevice", "device": "north-stock-1", "org": "client-kim"}), "DENY_NO_PERMISSION"),
        (&staff, json!({"op": "removeDevice", "device": "north-stock-1"}), "DENY_NO_PERMISSION"),
        (
            &staff,
            json!({"op": "setRolePermissions", "org": "dist-north", "role": "Staff", "permissions": []}),
            "DENY_NO_PERMISSION",
        ),
        (&staff, json!({"op": "suspendOrg", "org": "client-kim"}), "DENY_NO_PERMISSION"),
        (&staff, json!({"op": "resumeOrg", "org": "client-kim"}), "DENY_NO_PERMISSION"),
        (&staff, json!({"op": "deleteOrg", "org": "client-kim"}), "DENY_NO_PERMISSION"),
        (
            &staff,
            json!({"op": "claimDevice", "device": "eu-demo", "code": "123456", "org": "acme-eu"}),
            "DENY_NO_PERMISSION",
        ),
        (
            &office,
            json!({"op": "invite", "email": "boss@x.test", "org": "acme-eu", "role": "Admin"}),
            "DENY_ESCALATION",
        ),
        (
            &office,
            json!({"op": "setRolePermissions", "org": "acme-eu", "role": "Staff", "permissions": ["orgs.switch"]}),
            "DENY_ESCALATION",
        ),
        (&office, json!({"op": "suspendUser", "user": "eu-admin"}), "DENY_ESCALATION"),
        (&globex, json!({"op": "removeDevice", "device": "lab-1"}), "DENY_NO_PERMISSION"),
        (&globex, json!({"op": "moveDevice", "device": "globex-1", "org": "acme"}), "DENY_NO_PERMISSION"),
        (
            &jones,
            json!({"op": "claimDevice", "device": "eu-demo", "code": "000000", "org": "client-jones"}),
            "DENY_INVALID_TARGET",
        ),
    ];
    for (token, cmd, code) in &denied {
        let (s, b) = server.post(token, "/api/commands", cmd);
        assert_eq!((s, b["error"]["code"].as_str()), (403, Some(*code)), "{cmd}");
    }
    let (s, b) = server.post(&globex, "/api/devices/lab-1/commands", &json!({"name": "open"}));
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("DENY_NO_PERMISSION")));
    let (_, list) = server.get(&globex, "/api/devices");
    assert_eq!(list, json!(["globex-1"]));
    let (_, audit) = server.get(&globex, "/api/audit");
    assert!(audit.as_array().unwrap().iter().all(|e| e["org"] == "globex"), "no other tenant's audit entries: {audit}");
    // Bad input: malformed JSON, wrong content type, too large, unknown fields, wrong types.
    let auth = format!("Bearer {jones}");
    let send = |ct: &str, body: &str| {
        status_json(
            ureq::post(&server.url("/api/commands"))
                .set("Authorization", &auth)
                .set("Content-Type", ct)
                .send_string(body),
        )
    };
    assert_eq!(send("application/json", "{not json").0, 400);
    assert_eq!(send("text/plain", r#"{"op":"removeDevice","device":"jones-cam"}"#).0, 415);
    // Over 1 MiB: refused from the declared length, before the body is read (a client that
    // streams the body anyway may see the connection close under it).
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::{Read, Write};
    write!(tcp, "POST /api/commands HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\nConnection: close\r\n\r\n").unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = String::new();
    let _ = tcp.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains(r#""code":"PAYLOAD_TOO_LARGE""#), "{reply}");
    let (s, b) = send("application/json", r#"{"op":"removeDevice","device":"jones-cam","force":true}"#);
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("INVALID_COMMAND")));
    let (s, b) = send("application/json", r#"{"op":"removeDevice","device":7}"#);
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("INVALID_COMMAND")));
    let (s, _) = server.post(&jones, "/api/devices/jones-cam/commands", &json!({"name": "x", "params": [1]}));
    assert_eq!(s, 400);
    let (s, _) = server.get(&jones, "/api/devices?activeOrg=acme");
    assert_eq!(s, 403);
    // Nothing above was written.
    assert_eq!(server.revision(), rev);
    let (_, devices) = server.get(&jones, "/api/devices");
    assert_eq!(devices, json!(["garage-door", "jones-cam", "jones-lock", "jones-thermo"]));
}

#[test]
fn concurrent_commands_and_durability() {
    let file = vector("manufacturer.json");
    let mut server = Server::start("conc", Some(&seed_of(&file["snapshot"])));
    let start = server.revision();
    let ceo = server.login("ceo");
    let (_, before) = server.get(&ceo, "/api/snapshot");
    // Collect every event while 8 clients race 200 commands each.
    let (tx, rx) = mpsc::channel::<(u64, Value)>();
    let sse = ureq::get(&server.url("/api/events")).set("Authorization", &format!("Bearer {ceo}")).call().unwrap();
    std::thread::spawn(move || {
        let mut id = 0;
        for line in BufReader::new(sse.into_reader()).lines().map_while(Result::ok) {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().unwrap_or(0);
            } else if let Some(data) = line.strip_prefix("data: ") {
                let _ = tx.send((id, serde_json::from_str(data).unwrap()));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let url = server.url("/api/commands");
            let token = ceo.clone();
            std::thread::spawn(move || {
                let agent = ureq::agent();
                let mut revisions = Vec::new();
                for i in 0..200 {
                    let cmd =
                        json!({"op": "addDevice", "id": format!("c{c}-{i}"), "name": "Load", "org": "dist-south"});
                    let (s, b) =
                        status_json(agent.post(&url).set("Authorization", &format!("Bearer {token}")).send_json(cmd));
                    assert_eq!(s, 200, "{b}");
                    revisions.push(b["revision"].as_u64().unwrap());
                }
                revisions
            })
        })
        .collect();
    let mut revisions: Vec<u64> = clients.into_iter().flat_map(|h| h.join().unwrap()).collect();
    revisions.sort_unstable();
    let expected: Vec<u64> = (start + 1..=start + 1600).collect();
    assert_eq!(revisions, expected, "no lost update and a gap-free chain");
    let mut replica = Engine::from_json(&before.to_string()).unwrap();
    for n in 0..1600 {
        let (id, delta) = rx.recv_timeout(Duration::from_secs(20)).expect("one event per change");
        assert_eq!(id, start + 1 + n);
        replica.apply_delta_json(&delta.to_string()).unwrap();
    }
    let (_, after) = server.get(&ceo, "/api/snapshot");
    assert_eq!(serde_json::to_value(replica.to_doc()).unwrap(), after);

    // Kill the server while commands are in flight; everything acknowledged survives.
    let url = server.url("/api/commands");
    let token = ceo.clone();
    let (ack_tx, ack_rx) = mpsc::channel::<String>();
    let writer = std::thread::spawn(move || {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
        for i in 0..100_000 {
            let id = format!("k-{i}");
            let cmd = json!({"op": "addDevice", "id": id, "name": "Kill", "org": "dist-south"});
            match agent.post(&url).set("Authorization", &format!("Bearer {token}")).send_json(cmd) {
                Ok(_) => {
                    if ack_tx.send(id).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    let mut acked = vec![ack_rx.recv_timeout(Duration::from_secs(20)).unwrap()];
    while acked.len() < 50 {
        acked.push(ack_rx.recv_timeout(Duration::from_secs(20)).unwrap());
    }
    server.kill();
    writer.join().unwrap();
    acked.extend(ack_rx.try_iter());
    server.restart();
    let ceo = server.login("ceo");
    let (_, list) = server.get(&ceo, "/api/devices?activeOrg=dist-south");
    let list: Vec<String> = serde_json::from_value(list).unwrap();
    for id in &acked {
        assert!(list.binary_search(id).is_ok(), "acknowledged {id} was lost");
    }
    let rev = server.revision();
    assert!(rev >= start + 1600 + acked.len() as u64);
    let (s, b) = server.post(
        &ceo,
        "/api/commands",
        &json!({"op": "addDevice", "id": "after-restart", "name": "A", "org": "dist-south"}),
    );
    assert_eq!((s, b["revision"].as_u64()), (200, Some(rev + 1)), "the revision chain continues");
}
