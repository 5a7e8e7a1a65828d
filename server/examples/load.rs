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
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
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
