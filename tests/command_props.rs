//! Property tests for commands, previews, projections and projected deltas on random worlds.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;

use common::{random_perms, random_world, Model, Rng, ROLES};
use fleetgate::project::diff_projections;
use fleetgate::{Action, Command, Engine, Permission};
use proptest::prelude::*;
use serde_json::{json, Value};

fn load(m: &Model) -> Engine {
    Engine::from_json(&m.to_json(1).to_string()).unwrap()
}

/// An actor, biased toward active admins so that many commands are allowed.
fn random_actor(rng: &mut Rng, m: &Model) -> String {
    let admins: Vec<&String> =
        m.memberships.iter().filter(|x| x.2 == "Admin" && m.active(&x.0)).map(|x| &x.0).collect();
    if !admins.is_empty() && rng.chance(80) {
        admins[rng.below(admins.len())].clone()
    } else {
        m.users[rng.below(m.users.len())].id.clone()
    }
}

fn random_command(rng: &mut Rng, m: &Model, actor: &str) -> Value {
    let pick = |rng: &mut Rng, v: Vec<String>, extra: &str| {
        let mut v = v;
        v.push(extra.to_owned());
        v[rng.below(v.len())].clone()
    };
    let reach = m.switchable(actor);
    let orgs: Vec<String> =
        if !reach.is_empty() && rng.chance(75) { reach } else { m.orgs.iter().map(|o| o.id.clone()).collect() };
    let users: Vec<String> = m.users.iter().map(|u| u.id.clone()).collect();
    let devices: Vec<String> = m.devices.iter().map(|d| d.id.clone()).collect();
    let org = pick(rng, orgs.clone(), "o-new");
    let org2 = pick(rng, orgs, "o-other");
    let user = pick(rng, users, "u-new");
    let device = pick(rng, devices, "d-new");
    let role = ROLES[rng.below(ROLES.len())];
    match rng.below(15) {
        0 => json!({"op": "createOrg", "id": org, "name": "N", "parent": org2}),
        1 => {
            json!({"op": "invite", "email": format!("{}@new.test", rng.below(5)), "org": org, "role": role, "userId": user})
        }
        2 => json!({"op": "setRole", "user": user, "org": org, "role": role}),
        3 => json!({"op": "removeMember", "user": user, "org": org}),
        4 => json!({"op": "suspendUser", "user": user}),
        5 => json!({"op": "reactivateUser", "user": user}),
        6 => {
            json!({"op": "addDevice", "id": device, "name": "D", "org": org, "owner": if rng.chance(50) { Some(user) } else { None }})
        }
        7 => {
            if rng.chance(50) {
                json!({"op": "transferDevice", "device": device, "owner": user, "org": org})
            } else {
                json!({"op": "transferDevice", "device": device, "owner": user})
            }
        }
        8 => json!({"op": "moveDevice", "device": device, "org": org}),
        9 => json!({"op": "removeDevice", "device": device}),
        10 => json!({"op": "setRolePermissions", "org": org, "role": role, "permissions": random_perms(rng)}),
        11 => json!({"op": "suspendOrg", "org": org}),
        12 => json!({"op": "resumeOrg", "org": org}),
        13 => json!({"op": "deleteOrg", "org": org}),
        _ => json!({"op": "claimDevice", "device": device, "code": "0000", "org": org}),
    }
}

/// Every (user, device, action) access of the engine.
fn all_access(e: &Engine, users: &[String], devices: &[String]) -> BTreeSet<(String, String, Action)> {
    let mut out = BTreeSet::new();
    for u in users {
        for d in devices {
            for a in [Action::View, Action::Control] {
                if e.can(u, d, a) {
                    out.insert((u.clone(), d.clone(), a));
                }
            }
        }
    }
    out
}

fn ids(e: &Engine) -> (Vec<String>, Vec<String>, Vec<String>) {
    let doc = e.to_doc();
    let mut users: Vec<String> = doc.users.iter().map(|u| u.id.to_string()).collect();
    users.push("u-new".into());
    let mut devices: Vec<String> = doc.devices.iter().map(|d| d.id.to_string()).collect();
    devices.push("d-new".into());
    let mut orgs: Vec<String> = doc.orgs.iter().map(|o| o.id.to_string()).collect();
    orgs.push("o-new".into());
    (users, devices, orgs)
}

/// For `viewer`, everything computed on the projection equals the full engine's, and the
/// projection holds nothing beyond SPEC §4.3's list.
fn assert_sound(full: &Engine, viewer: &str) {
    let doc = full.project(viewer);
    let direct: Value = serde_json::from_str(&full.project_json(viewer)).unwrap();
    assert_eq!(direct, serde_json::to_value(&doc).unwrap(), "project_json differs from project");
    let proj = Engine::from_doc(doc.clone()).unwrap_or_else(|e| panic!("projection of {viewer} does not load: {e}"));
    let (_, devices, orgs) = ids(full);
    for d in &devices {
        for a in [Action::View, Action::Control] {
            assert_eq!(proj.can(viewer, d, a), full.can(viewer, d, a), "{viewer} {d} {a:?}");
            if proj.can(viewer, d, Action::View) {
                assert_eq!(proj.explain(viewer, d, a), full.explain(viewer, d, a));
            }
        }
    }
    for a in [Action::View, Action::Control] {
        assert_eq!(proj.visible_devices(viewer, a, None).unwrap(), full.visible_devices(viewer, a, None).unwrap());
        for o in &orgs {
            assert_eq!(proj.visible_devices(viewer, a, Some(o)).ok(), full.visible_devices(viewer, a, Some(o)).ok());
        }
    }
    assert_eq!(proj.switchable_orgs(viewer), full.switchable_orgs(viewer));
    for o in &orgs {
        assert_eq!(proj.permissions_in(viewer, o), full.permissions_in(viewer, o), "permissionsIn({viewer}, {o})");
    }
    // Nothing beyond the list.
    let visible: BTreeSet<String> =
        full.visible_devices(viewer, Action::View, None).unwrap().into_iter().map(str::to_owned).collect();
    let projected: BTreeSet<String> = doc.devices.iter().map(|d| d.id.to_string()).collect();
    assert_eq!(projected, visible);
    let full_doc = full.to_doc();
    let my_orgs: BTreeSet<String> =
        full_doc.memberships.iter().filter(|m| m.user.as_str() == viewer).map(|m| m.org.to_string()).collect();
    let mut allowed_orgs: BTreeSet<String> = full.switchable_orgs(viewer).into_iter().map(str::to_owned).collect();
    allowed_orgs.extend(my_orgs);
    let got_orgs: BTreeSet<String> = doc.orgs.iter().map(|o| o.id.to_string()).collect();
    assert_eq!(got_orgs, allowed_orgs);
    let users_view: BTreeSet<String> =
        got_orgs.iter().filter(|o| full.permissions_in(viewer, o).has(Permission::UsersView)).cloned().collect();
    for u in &doc.users {
        let owner = doc.devices.iter().any(|d| d.owner.as_ref() == Some(&u.id));
        let member = full_doc.memberships.iter().any(|m| m.user == u.id && users_view.contains(m.org.as_str()));
        assert!(u.id.as_str() == viewer || owner || member, "user {} leaked to {viewer}", u.id);
    }
    for m in &doc.memberships {
        let owner_mem = doc.devices.iter().any(|d| d.owner.as_ref() == Some(&m.user) && d.org == m.org);
        assert!(m.user.as_str() == viewer || owner_mem || users_view.contains(m.org.as_str()), "membership leaked");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    #[test]
    fn commands_agree_and_preview_matches_brute_force(seed in any::<u64>()) {
        let m = random_world(seed);
        prop_assume!(m.valid());
        let mut e = load(&m);
        let mut rng = Rng(seed ^ 0x5151);
        for _ in 0..10 {
            let actor = random_actor(&mut rng, &m);
            let cmd = Command::from_value(&random_command(&mut rng, &m, &actor)).unwrap();
            let decision = e.decide(&actor, &cmd);
            let (d2, delta) = e.command_delta(&actor, &cmd).unwrap();
            prop_assert_eq!(&decision, &d2);
            prop_assert_eq!(decision.allowed, delta.is_some());
            let (mut users, mut devices, _) = ids(&e);
            let before_json = e.to_json();
            let preview = e.preview(&actor, &cmd);
            prop_assert_eq!(&e.to_json(), &before_json, "preview changed the engine");
            prop_assert_eq!(&preview.decision, &decision);
            if let Some(delta) = delta {
                let mut after_engine = e.clone();
                after_engine.apply_delta(&delta).unwrap_or_else(|err| panic!("allowed {cmd:?} gave an invalid delta: {err}"));
                // The inverse ops restore the state before the delta exactly.
                let mut undone = after_engine.clone();
                let inverse = e.inverse_ops(&delta.ops);
                undone.apply_delta(&fleetgate::Delta::new(delta.to.0, delta.to.0 + 1, inverse)).unwrap();
                let (mut want, mut got) = (e.to_doc(), undone.to_doc());
                want.revision = got.revision;
                got.viewer = want.viewer.clone();
                prop_assert_eq!(got, want, "inverse of {:?}", cmd);
                // Everyone and everything of both states.
                let (u2, d2, _) = ids(&after_engine);
                users.extend(u2);
                devices.extend(d2);
                users.sort();
                users.dedup();
                devices.sort();
                devices.dedup();
                let before = all_access(&e, &users, &devices);
                let after = all_access(&after_engine, &users, &devices);
                let gained: Vec<_> = after.difference(&before).map(|(u, d, a)| (u.clone(), d.clone(), *a)).collect();
                let lost: Vec<_> = before.difference(&after).map(|(u, d, a)| (u.clone(), d.clone(), *a)).collect();
                let pg: Vec<_> = preview.gained.iter().map(|x| (x.user.clone(), x.device.clone(), x.action)).collect();
                let pl: Vec<_> = preview.lost.iter().map(|x| (x.user.clone(), x.device.clone(), x.action)).collect();
                prop_assert_eq!(pg, gained, "gained for {:?}", cmd);
                prop_assert_eq!(pl, lost, "lost for {:?}", cmd);
                // Projected deltas, for every viewer.
                for v in &users {
                    // A projection names its viewer, who must be a user of it: a user the
                    // command creates has no projection before it.
                    if e.user_doc_by_id(v).is_none() {
                        continue;
                    }
                    let probe = e.probe(&delta, v);
                    let part_before = e.projection_part(v, &probe);
                    let old_projection = e.project(v);
                    let new_projection = after_engine.project(v);
                    let part_after = after_engine.projection_part(v, &probe);
                    let pd = fleetgate::project::projected_delta(&part_before, &part_after, delta.from.0, delta.to.0);
                    let mut replica = Engine::from_doc(old_projection.clone()).unwrap();
                    replica.apply_delta(&pd).unwrap_or_else(|err| panic!("projected delta for {v} does not apply: {err}\n{pd:?}"));
                    prop_assert_eq!(replica.to_doc(), new_projection.clone(), "projected delta for {} after {:?}", v, cmd);
                    let whole = diff_projections(old_projection, new_projection.clone());
                    let mut replica2 = Engine::from_doc(e.project(v)).unwrap();
                    replica2.apply_delta(&whole).unwrap();
                    prop_assert_eq!(replica2.to_doc(), new_projection);
                }

                eprintln!("ALLOWED {}", cmd.op());
                e = after_engine;
            }
        }
    }

    #[test]
    fn projections_are_sound(seed in any::<u64>()) {
        let m = random_world(seed);
        prop_assume!(m.valid());
        let e = load(&m);
        for u in &m.users {
            assert_sound(&e, &u.id);
        }
    }
}
