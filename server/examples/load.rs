//! Load benchmark of the server (run by hand: `make bench-server`). Starts the release server on
//! the generated large world (1 root, ~2,000 orgs, 20,000 users, 100,000 devices), then drives it
//! from client threads on loopback and prints requests/s and latency percentiles per scenario.
//! The clients share the machine's cores with the server, so the numbers are a floor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleetgate::generate::{generate, WorldSize};
use serde_json::{json, Value};

const PASSWORD: &str = "load-test-password";

fn main() {
    let dir = std::env::temp_dir().join(format!("fleetgate-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let world = generate(WorldSize::LARGE);
    let leaf = world
        .memberships
        .iter()
        .find(|m| m.role.as_str() == "User" && world.devices.iter().any(|d| d.owner.as_ref() == Some(&m.user)))
        .unwrap()
        .user
        .to_string();
    let leaf_device = world
        .devices
        .iter()
        .find(|d| d.owner.as_ref().map(|o| o.as_str()) == Some(leaf.as_str()))
        .unwrap()
        .id
        .to_string();
    let seed = json!({"snapshot": world, "passwords": {"u000000": PASSWORD, leaf.clone(): PASSWORD}});
    let seed_path = dir.join("seed.json");
    std::fs::write(&seed_path, seed.to_string()).unwrap();
    let bin = std::env::var("FLEETGATE_SERVER")
        .unwrap_or_else(|_| format!("{}/../target/release/fleetgate-server", env!("CARGO_MANIFEST_DIR")));
    let mut child = Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--db",
            &dir.join("load.db").display().to_string(),
            "--seed",
            &seed_path.display().to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("build the server first: cargo build --release -p fleetgate-server");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    while !line.contains("listening on") {
        line.clear();
        out.read_line(&mut line).unwrap();
    }
    let base = line.trim().rsplit(' ').next().unwrap().to_owned();
    let login = |user: &str| -> String {
        let res: Value = ureq::post(&format!("{base}/api/login"))
            .send_json(json!({"email": format!("{user}@example.test"), "password": PASSWORD}))
            .unwrap()
            .into_json()
            .unwrap();
        res["token"].as_str().unwrap().to_owned()
    };
    let admin = login("u000000");
    let user = login(&leaf);
    let etag = ureq::get(&format!("{base}/api/snapshot"))
        .set("Authorization", &format!("Bearer {user}"))
        .call()
        .unwrap()
        .header("etag")
        .unwrap()
        .to_owned();
    println!("{:<52} {:>10} {:>10} {:>10}", "scenario (4 client threads, keep-alive)", "req/s", "p50", "p99");
    run("GET /api/snapshot → 304 (leaf user)", 4, 20_000, |agent| {
        let r = agent
            .get(&format!("{base}/api/snapshot"))
            .set("Authorization", &format!("Bearer {user}"))
            .set("If-None-Match", &etag)
            .call();
        assert!(matches!(r, Ok(ref x) if x.status() == 304));
    });
    run("GET /api/snapshot full (leaf user)", 4, 10_000, |agent| {
        let r =
            agent.get(&format!("{base}/api/snapshot")).set("Authorization", &format!("Bearer {user}")).call().unwrap();
        let _ = r.into_string().unwrap();
    });
    run("GET /api/snapshot full (root admin, 100k devices)", 2, 20, |agent| {
        let r =
            agent.get(&format!("{base}/api/snapshot")).set("Authorization", &format!("Bearer {admin}")).call().unwrap();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut r.into_reader(), &mut body).unwrap();
        assert!(body.len() > 1_000_000);
    });
    run("POST /api/devices/{id}/commands (queued, durable)", 4, 10_000, |agent| {
        let r = agent
            .post(&format!("{base}/api/devices/{leaf_device}/commands"))
            .set("Authorization", &format!("Bearer {user}"))
            .send_json(json!({"name": "toggle", "params": {}}))
            .unwrap();
        assert_eq!(r.status(), 202);
    });
    // Admin commands (each a committed delta, fanned out): alone, then while two readers keep
    // listing the root admin's 100k devices (readers hold engine versions; the writer reuses
    // the previous version when free and clones the published one when a reader holds it).
    let (org_a, org_b) = (world.orgs[0].id.to_string(), world.orgs[1].id.to_string());
    let moving = world.devices.iter().find(|d| d.owner.is_none()).unwrap().id.to_string();
    let flip = std::sync::atomic::AtomicU64::new(0);
    let command = |agent: &ureq::Agent| {
        let n = flip.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let org = if n % 2 == 0 { &org_a } else { &org_b };
        let r = agent
            .post(&format!("{base}/api/commands"))
            .set("Authorization", &format!("Bearer {admin}"))
            .send_json(json!({"op": "moveDevice", "device": moving, "org": org}))
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    run("POST /api/commands moveDevice (root admin, 100k world)", 1, 300, command);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let lists = std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (stop, base, admin) = (&stop, &base, &admin);
                s.spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let r = ureq::get(&format!("{base}/api/devices"))
                            .set("Authorization", &format!("Bearer {admin}"))
                            .call()
                            .unwrap();
                        let _ = r.into_string().unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        run("  the same while 2 threads list 100k devices", 1, 300, command);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        readers.into_iter().map(|r| r.join().unwrap()).sum::<u64>()
    });
    println!("  readers listed 100k devices {lists} times meanwhile");
    // Logins under attack: two threads spray wrong passwords from 127.0.0.9 (throttled to
    // 429 before any hash after 50 a minute) while legitimate clients sign in from 127.0.0.1.
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (attempts, refused) = std::thread::scope(|s| {
        let attackers: Vec<_> = (0..2)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || {
                    let (mut n, mut refused) = (0u64, 0u64);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let body = json!({"email": format!("victim{t}{}@example.test", n % 50), "password": "guess"})
                            .to_string();
                        let status = raw_post(addr, [127, 0, 0, 9], "/api/login", &body);
                        n += 1;
                        refused += u64::from(status == 429);
                    }
                    (n, refused)
                })
            })
            .collect();
        run("POST /api/login (legit, 127.0.0.1) under attack", 2, 60, |agent| {
            let r = agent
                .post(&format!("{base}/api/login"))
                .send_json(json!({"email": format!("{leaf}@example.test"), "password": PASSWORD}))
                .unwrap();
            assert_eq!(r.status(), 200);
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        attackers.into_iter().map(|a| a.join().unwrap()).fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    });
    println!("  attacker: {attempts} attempts, {refused} answered 429 without a hash");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A POST over a fresh connection from a chosen loopback source address; returns the status.
fn raw_post(server: std::net::SocketAddr, source: [u8; 4], path: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&std::net::SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&server.into()).unwrap();
    let mut tcp: std::net::TcpStream = socket.into();
    let _ = write!(
        tcp,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    String::from_utf8_lossy(&out).split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn run(label: &str, threads: usize, total: usize, request: impl Fn(&ureq::Agent) + Sync) {
    let per = total / threads;
    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let agent = ureq::AgentBuilder::new().max_idle_connections_per_host(4).build();
                    (0..per)
                        .map(|_| {
                            let t = Instant::now();
                            request(&agent);
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{label:<52} {:>10.0} {:>10.2?} {:>10.2?}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
}
