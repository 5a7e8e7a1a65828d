//! Benchmarks on the generated large world (1 root, ~2,000 orgs over 5 levels, 20,000 users,
//! 100,000 devices, a third owned): load, single check, listings, a single-device move delta.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use fleetgate::generate::{generate, WorldSize};
use fleetgate::{Action, Command, Engine};

fn world() -> (String, Engine) {
    let text = serde_json::to_string(&generate(WorldSize::LARGE)).unwrap();
    let engine = Engine::from_json(&text).unwrap();
    (text, engine)
}

/// A leaf-org user: a member of an end client with only own-device permissions.
fn leaf_user(e: &Engine) -> (String, String) {
    let doc = e.to_doc();
    let m = doc
        .memberships
        .iter()
        .find(|m| m.role.as_str() == "User" && doc.devices.iter().any(|d| d.owner.as_ref() == Some(&m.user)))
        .unwrap();
    let d = doc.devices.iter().find(|d| d.owner.as_ref() == Some(&m.user)).unwrap();
    (m.user.to_string(), d.id.to_string())
}

fn benches(c: &mut Criterion) {
    let (text, mut engine) = world();
    let (leaf, leaf_dev) = leaf_user(&engine);
    let leaf_admin = {
        let doc = engine.to_doc();
        doc.memberships
            .iter()
            .find(|m| m.role.as_str() == "Admin" && m.org.as_str().matches('-').count() == 4)
            .unwrap()
            .user
            .to_string()
    };
    println!(
        "world: {:?} (orgs, users, memberships, devices); {} bytes of JSON; root admin sees {}, leaf user sees {}, leaf admin sees {}",
        engine.counts(),
        text.len(),
        engine.visible_devices("u000000", Action::View, None).unwrap().len(),
        engine.visible_devices(&leaf, Action::View, None).unwrap().len(),
        engine.visible_devices(&leaf_admin, Action::View, None).unwrap().len(),
    );

    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.bench_function("from_json 100k devices", |b| {
        b.iter_with_large_drop(|| Engine::from_json(black_box(&text)).unwrap())
    });
    g.finish();

    c.bench_function("can_view (root admin, allowed via sub-org)", |b| {
        b.iter(|| engine.can_view(black_box("u000000"), black_box(&leaf_dev)))
    });
    c.bench_function("can_view (leaf user, own device)", |b| {
        b.iter(|| engine.can_view(black_box(&leaf), black_box(&leaf_dev)))
    });
    c.bench_function("can_view (leaf user, denied)", |b| {
        b.iter(|| engine.can_view(black_box(&leaf), black_box("d000001")))
    });
    c.bench_function("explain (root admin)", |b| {
        b.iter(|| engine.explain(black_box("u000000"), black_box(&leaf_dev), Action::Control))
    });
    c.bench_function("visible_devices leaf user", |b| {
        b.iter(|| engine.visible_devices(black_box(&leaf), Action::View, None).unwrap())
    });
    c.bench_function("visible_devices leaf-org admin", |b| {
        b.iter(|| engine.visible_devices(black_box(&leaf_admin), Action::View, None).unwrap())
    });
    let mut g = c.benchmark_group("root admin");
    g.sample_size(30);
    g.bench_function("visible_devices 100k", |b| {
        b.iter(|| engine.visible_devices(black_box("u000000"), Action::View, None).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("project");
    g.sample_size(20);
    g.bench_function("root admin (100k devices)", |b| b.iter(|| engine.project(black_box("u000000"))));
    g.bench_function("project_json root admin (100k devices)", |b| {
        b.iter(|| engine.project_json(black_box("u000000")))
    });
    g.finish();
    c.bench_function("project leaf user", |b| b.iter(|| engine.project(black_box(&leaf))));
    c.bench_function("project_json leaf user", |b| b.iter(|| engine.project_json(black_box(&leaf))));
    c.bench_function("project leaf-org admin", |b| b.iter(|| engine.project(black_box(&leaf_admin))));

    // Commands on one device: preview and the projected delta of a move.
    let doc = engine.to_doc();
    let moving =
        doc.devices.iter().find(|d| d.owner.is_none() && d.org.as_str().matches('-').count() == 4).unwrap().clone();
    let sibling = doc
        .orgs
        .iter()
        .find(|o| o.parent == doc.orgs.iter().find(|p| p.id == moving.org).unwrap().parent && o.id != moving.org)
        .unwrap()
        .id
        .clone();
    let cmd =
        Command::parse(&format!(r#"{{"op":"moveDevice","device":"{}","org":"{}"}}"#, moving.id, sibling)).unwrap();
    assert!(engine.decide("u000000", &cmd).allowed);
    c.bench_function("preview moveDevice (root admin)", |b| {
        b.iter(|| engine.preview(black_box("u000000"), black_box(&cmd)))
    });
    let (_, delta) = engine.command_delta("u000000", &cmd).unwrap();
    let delta = delta.unwrap();
    let after = {
        let mut e = engine.clone();
        e.apply_delta(&delta).unwrap();
        e
    };
    for (label, viewer) in [("root admin", "u000000".to_owned()), ("leaf-org admin", leaf_admin.clone())] {
        c.bench_function(&format!("projected delta of a device move ({label})"), |b| {
            b.iter(|| {
                let probe = engine.probe(black_box(&delta), &viewer);
                let before = engine.projection_part(&viewer, &probe);
                let now = after.projection_part(&viewer, &probe);
                fleetgate::project::projected_delta(&before, &now, delta.from.0, delta.to.0)
            })
        });
    }

    // Move one unowned device between two orgs and back, one delta each.
    let doc = engine.to_doc();
    let dev = doc.devices.iter().find(|d| d.owner.is_none()).unwrap().clone();
    let other = doc.orgs.iter().find(|o| o.id != dev.org).unwrap().id.clone();
    let mut flip = false;
    c.bench_function("apply_delta_json single device move", |b| {
        b.iter(|| {
            let rev = engine.revision();
            let org = if flip { &dev.org } else { &other };
            flip = !flip;
            let delta = format!(
                r#"{{"format":"fleetgate/delta@1","from":{rev},"to":{},"ops":[{{"op":"putDevice","device":{{"id":"{}","name":"{}","org":"{org}","owner":null}}}}]}}"#,
                rev + 1,
                dev.id,
                dev.name
            );
            engine.apply_delta_json(black_box(&delta)).unwrap();
        })
    });

    // What a server commit of `addDevice` costs the engine: a device added, then removed again,
    // one delta each, with an id first in id order (everything after it moves down a rank) in
    // the root org (the longest device list), and with an id last in id order.
    for (label, id) in [("first in id order", "0-added"), ("last in id order", "zz-added")] {
        let mut added = false;
        c.bench_function(&format!("apply_delta_json add/remove a root-org device ({label})"), |b| {
            b.iter(|| toggle_device(&mut engine, id, &mut added))
        });
    }
    // The same followed by a listing: the first listing after devices came or went ranks them.
    let region = engine
        .to_doc()
        .memberships
        .iter()
        .find(|m| m.role.as_str() == "Admin" && m.org.as_str().matches('-').count() == 1)
        .unwrap()
        .user
        .to_string();
    let mut added = false;
    c.bench_function("add/remove a device first in id order, then list (region admin)", |b| {
        b.iter(|| {
            toggle_device(&mut engine, "0-added", &mut added);
            black_box(engine.visible_devices(&region, Action::View, None).unwrap().len())
        })
    });
}

/// Adds device `id` to the root org, or removes it again (`added` says which is due), by one
/// delta from the engine's revision.
fn toggle_device(engine: &mut Engine, id: &str, added: &mut bool) {
    let rev = engine.revision();
    let op = if *added {
        format!(r#"{{"op":"removeDevice","id":"{id}"}}"#)
    } else {
        format!(r#"{{"op":"putDevice","device":{{"id":"{id}","name":"Added","org":"acme","owner":null}}}}"#)
    };
    *added = !*added;
    let delta = format!(r#"{{"format":"fleetgate/delta@1","from":{rev},"to":{},"ops":[{op}]}}"#, rev + 1);
    engine.apply_delta_json(black_box(&delta)).unwrap();
}

criterion_group!(engine_benches, benches);
criterion_main!(engine_benches);
