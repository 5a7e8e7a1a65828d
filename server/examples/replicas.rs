//! Replica benchmark (run by hand: `make bench-replicas`, which starts a throwaway PostgreSQL
//! through `scripts/postgres.sh`). On the generated large world (100,000 devices), it prints:
//!
//! - durable commands/s and latency percentiles with 1, 2 and 3 release replicas on PostgreSQL
//!   (16 clients spread over the replicas, each sending `addDevice` for a few seconds), and the
//!   same load on one process over SQLite;
//! - fan-out latency: a command sent to replica A, timed until A acknowledges it and until the
//!   event carrying its revision arrives on replica B's stream.
//!
//! Clients, replicas and PostgreSQL share this machine's cores: the numbers are a floor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use fleetgate::generate::{generate, WorldSize};
use serde_json::{json, Value};

const PASSWORD: &str = "bench-password";
const CLIENTS: usize = 16;
const SECONDS: u64 = 6;

struct Replica {
    child: Child,
    base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[String]) -> Replica {
    let bin = std::env::var("FLEETGATE_SERVER")
        .unwrap_or_else(|_| format!("{}/../target/release/fleetgate-server", env!("CARGO_MANIFEST_DIR")));
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("build the server first: cargo build --release -p fleetgate-server");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the server exited");
    }
    let base = line.trim().rsplit(' ').next().unwrap().to_owned();
    std::thread::spawn(move || for _ in out.lines() {});
    Replica { child, base }
}

fn database(base: &str, name: &str) -> String {
    let mut admin = postgres::Client::connect(&format!("{base}/postgres"), postgres::NoTls).unwrap();
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    format!("{base}/{name}")
}

fn login(base: &str) -> String {
    let res = ureq::post(&format!("{base}/api/login"))
        .send_json(json!({"email": "u000000@example.test", "password": PASSWORD}))
        .unwrap();
    res.into_json::<Value>().unwrap()["token"].as_str().unwrap().to_owned()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The new devices' id prefix (`FLEETGATE_BENCH_PREFIX`, default `b-`: before every generated
/// id in id order, the engine's costliest place to add a device; `zz-` adds them at the end).
fn prefix() -> String {
    std::env::var("FLEETGATE_BENCH_PREFIX").unwrap_or_else(|_| "b-".into())
}

/// `CLIENTS` clients over `bases` for `SECONDS`; prints commands/s and percentiles.
fn load(label: &str, bases: &[String], token: &str, org: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (base, token, org, stop) =
                (bases[c % bases.len()].clone(), token.to_owned(), org.to_owned(), stop.clone());
            let tag = label.replace(|ch: char| !ch.is_ascii_alphanumeric(), "");
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
                let mut times = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let cmd = json!({"op": "addDevice", "id": format!("{}{tag}-{c}-{i}", prefix()), "name": "Bench", "org": org});
                    i += 1;
                    let t = Instant::now();
                    let r = agent
                        .post(&format!("{base}/api/commands"))
                        .set("Authorization", &format!("Bearer {token}"))
                        .send_json(cmd);
                    assert!(r.is_ok(), "{r:?}");
                    times.push(t.elapsed());
                }
                times
            })
        })
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(SECONDS));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let secs = t0.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "{label:<34} {:>7.0} commands/s   p50 {:>6.2} ms   p99 {:>7.2} ms   ({} commands, {CLIENTS} clients)",
        all.len() as f64 / secs,
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        all.len()
    );
}

/// Commands sent one at a time to `a`; each timed to `a`'s answer and to `b`'s event.
fn fan_out(a: &str, b: &str, token: &str, org: &str) {
    let res = ureq::get(&format!("{b}/api/events")).set("Authorization", &format!("Bearer {token}")).call().unwrap();
    let (tx, rx) = mpsc::channel::<(u64, Instant)>();
    std::thread::spawn(move || {
        for line in BufReader::new(res.into_reader()).lines().map_while(Result::ok) {
            if let Some(id) = line.strip_prefix("id: ") {
                if tx.send((id.parse().unwrap_or(0), Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let agent = ureq::agent();
    let (mut acks, mut events) = (Vec::new(), Vec::new());
    for i in 0..300 {
        let cmd = json!({"op": "addDevice", "id": format!("fan-{i}"), "name": "Fan", "org": org});
        let t = Instant::now();
        let body: Value = agent
            .post(&format!("{a}/api/commands"))
            .set("Authorization", &format!("Bearer {token}"))
            .send_json(cmd)
            .unwrap()
            .into_json()
            .unwrap();
        acks.push(t.elapsed());
        let rev = body["revision"].as_u64().unwrap();
        loop {
            let (id, at) = rx.recv_timeout(Duration::from_secs(5)).expect("the event on the other replica");
            if id >= rev {
                events.push(at - t);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    acks.sort_unstable();
    events.sort_unstable();
    println!(
        "fan-out A→B (300 commands)         sent→ack on A p50 {:.2} ms p99 {:.2} ms;   sent→event on B p50 {:.2} ms p99 {:.2} ms",
        ms(percentile(&acks, 0.5)),
        ms(percentile(&acks, 0.99)),
        ms(percentile(&events, 0.5)),
        ms(percentile(&events, 0.99))
    );
}

fn main() {
    let pg = std::env::var("FLEETGATE_TEST_PG").expect("run through scripts/postgres.sh (make bench-replicas)");
    let dir = std::env::temp_dir().join(format!("fleetgate-replicas-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let world = generate(WorldSize::LARGE);
    let org = world.orgs.iter().find(|o| o.parent.is_some()).unwrap().id.to_string();
    let seed = json!({"snapshot": world, "passwords": {"u000000": PASSWORD}});
    let seed_path = dir.join("seed.json");
    std::fs::write(&seed_path, seed.to_string()).unwrap();
    let seed_arg = seed_path.display().to_string();
    println!(
        "world: {} orgs, {} users, {} devices; {CLIENTS} clients for {SECONDS} s per row",
        world.orgs.len(),
        world.users.len(),
        world.devices.len()
    );

    {
        let db = dir.join("bench.db").display().to_string();
        let one = start(&["--db".into(), db, "--seed".into(), seed_arg.clone()]);
        let token = login(&one.base);
        load("SQLite, 1 process", std::slice::from_ref(&one.base), &token, &org);
    }
    {
        // What the fsync at each commit costs: the same load without waiting for it.
        let url = format!("{}?options=-c%20synchronous_commit%3Doff", database(&pg, "bench_async"));
        let one = start(&["--database-url".into(), url, "--seed".into(), seed_arg.clone()]);
        let token = login(&one.base);
        load("PostgreSQL, 1, synchronous_commit=off", std::slice::from_ref(&one.base), &token, &org);
    }
    for n in 1..=3 {
        let url = database(&pg, &format!("bench_{n}"));
        let mut replicas = vec![start(&["--database-url".into(), url.clone(), "--seed".into(), seed_arg.clone()])];
        for _ in 1..n {
            replicas.push(start(&["--database-url".into(), url.clone()]));
        }
        let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
        let token = login(&bases[0]);
        load(&format!("PostgreSQL, {n} replica{}", if n > 1 { "s" } else { "" }), &bases, &token, &org);
        if n == 2 {
            fan_out(&bases[0], &bases[1], &token, &org);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
