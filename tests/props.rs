//! Property tests: the indexed engine answers exactly like the reference model in `common`, on
//! random worlds and after random delta chains; a failed delta changes nothing.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{random_perms, random_world, Model, RDevice, ROrg, RUser, Rng, ROLES};
use fleetgate::{Action, Engine};
use proptest::prelude::*;
use serde_json::{json, Value};

fn load(m: &Model, revision: u64) -> Engine {
    Engine::from_json(&m.to_json(revision).to_string()).unwrap_or_else(|e| panic!("{e}\n{:#?}", m))
}

/// Compares every decision, list, switchable set and permission set.
fn assert_same(e: &Engine, m: &Model) {
    let mut users: Vec<String> = m.users.iter().map(|u| u.id.clone()).collect();
    users.push("ghost".into());
    let mut devices: Vec<String> = m.devices.iter().map(|d| d.id.clone()).collect();
    devices.push("ghost-device".into());
    let mut orgs: Vec<String> = m.orgs.iter().map(|o| o.id.clone()).collect();
    orgs.push("ghost-org".into());
    for u in &users {
        for action in ["view", "control"] {
            let a = Action::parse(action).unwrap();
            for d in &devices {
                let got = serde_json::to_value(e.explain(u, d, a)).unwrap();
                assert_eq!(got, m.explain(u, d, action), "explain({u}, {d}, {action})");
                assert_eq!(e.can(u, d, a), got["allowed"] == json!(true));
            }
            let want = m.visible(u, action, None).unwrap();
            assert_eq!(e.visible_devices(u, a, None).unwrap(), want, "visible({u}, {action})");
            let in_input_order: Vec<&String> = devices.iter().filter(|d| want.contains(d)).collect();
            assert_eq!(e.filter_devices(u, &devices, a), in_input_order, "filter({u}, {action})");
            for o in &orgs {
                let got = e
                    .visible_devices(u, a, Some(o))
                    .map(|l| l.into_iter().map(str::to_owned).collect::<Vec<_>>())
                    .map_err(|err| assert_eq!(err.code(), "NOT_SWITCHABLE"));
                assert_eq!(got, m.visible(u, action, Some(o)), "visible({u}, {action}, activeOrg {o})");
            }
        }
        assert_eq!(e.switchable_orgs(u), m.switchable(u), "switchable({u})");
        for o in &orgs {
            assert_eq!(e.permissions_in(u, o).names(), m.permissions_in(u, o), "permissionsIn({u}, {o})");
        }
    }
}

/// One random op against the model: the delta op as JSON and the model after it (`None`: the
/// op itself is invalid, e.g. removing what does not exist).
fn random_op(rng: &mut Rng, m: &Model) -> (Value, Option<Model>) {
    let mut next = m.clone();
    let org_ids: Vec<String> = m.orgs.iter().map(|o| o.id.clone()).chain(["o-new".to_owned()]).collect();
    let user_ids: Vec<String> = m.users.iter().map(|u| u.id.clone()).chain(["u-new".to_owned()]).collect();
    let dev_ids: Vec<String> = m.devices.iter().map(|d| d.id.clone()).chain(["d-new".to_owned()]).collect();
    let org = rng.pick(&org_ids).cloned().unwrap();
    let user = rng.pick(&user_ids).cloned().unwrap();
    let dev = rng.pick(&dev_ids).cloned().unwrap();
    match rng.below(9) {
        0 | 1 => {
            let owner = if rng.chance(50) { Some(user) } else { None };
            next.devices.retain(|d| d.id != dev);
            next.devices.push(RDevice { id: dev.clone(), org: org.clone(), owner: owner.clone() });
            (json!({"op": "putDevice", "device": {"id": dev, "name": dev, "org": org, "owner": owner}}), Some(next))
        }
        2 => {
            let role = ROLES[rng.below(ROLES.len())];
            next.memberships.retain(|x| !(x.0 == user && x.1 == org));
            next.memberships.push((user.clone(), org.clone(), role.to_owned()));
            (json!({"op": "putMembership", "membership": {"user": user, "org": org, "role": role}}), Some(next))
        }
        3 => {
            let found = next.memberships.iter().any(|x| x.0 == user && x.1 == org);
            next.memberships.retain(|x| !(x.0 == user && x.1 == org));
            (json!({"op": "removeMembership", "user": user, "org": org}), found.then_some(next))
        }
        4 => {
            let status = ["active", "pending", "suspended"][rng.below(3)];
            next.users.retain(|u| u.id != user);
            next.users.push(RUser { id: user.clone(), status: status.to_owned() });
            let v = json!({"op": "putUser", "user": {"id": user, "email": format!("{user}@example.test"), "name": user, "status": status}});
            (v, Some(next))
        }
        5 => {
            let parent = if rng.chance(30) { None } else { rng.pick(&org_ids).cloned() };
            let roles = if rng.chance(40) {
                let mut t = std::collections::BTreeMap::new();
                for r in ROLES {
                    if rng.chance(40) {
                        t.insert(r.to_string(), random_perms(rng));
                    }
                }
                Some(t)
            } else {
                m.org(&org).and_then(|o| o.roles.clone())
            };
            let o = ROrg {
                id: org.clone(),
                parent: parent.clone(),
                suspended: rng.chance(25),
                plan: "pro".into(),
                roles: roles.clone(),
            };
            next.orgs.retain(|x| x.id != org);
            next.orgs.push(o.clone());
            let mut v = json!({"op": "putOrg", "org": {"id": org, "name": format!("Org {org}"), "parent": parent, "suspended": o.suspended}});
            if let Some(t) = roles {
                v["org"]["roles"] = json!(t);
            }
            (v, Some(next))
        }
        6 => {
            let found = next.devices.iter().any(|d| d.id == dev);
            next.devices.retain(|d| d.id != dev);
            (json!({"op": "removeDevice", "id": dev}), found.then_some(next))
        }
        7 => {
            let found = next.orgs.iter().any(|o| o.id == org);
            next.orgs.retain(|o| o.id != org);
            (json!({"op": "removeOrg", "id": org}), found.then_some(next))
        }
        _ => {
            let found = next.users.iter().any(|u| u.id == user);
            next.users.retain(|u| u.id != user);
            // A removed user must not be referenced: the model checks memberships and owners.
            let dangling = next.memberships.iter().any(|x| x.0 == user)
                || next.devices.iter().any(|d| d.owner.as_deref() == Some(&user));
            (json!({"op": "removeUser", "id": user}), (found && !dangling).then_some(next))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_reference(seed in any::<u64>()) {
        let m = random_world(seed);
        prop_assume!(m.valid());
        let e = load(&m, 1);
        assert_same(&e, &m);
        // Export and reload: the same answers.
        let again = Engine::from_json(&e.to_json()).unwrap();
        assert_eq!(again.to_json(), e.to_json());
        assert_same(&again, &m);
        // The text written straight from the index is the document's, for the whole snapshot
        // and for each projection (and for a projection loaded as an engine).
        assert_eq!(e.to_json(), serde_json::to_string(&e.to_doc()).unwrap());
        for u in &m.users {
            let projected = e.project_json(&u.id);
            assert_eq!(projected, serde_json::to_string(&e.project(&u.id)).unwrap());
            let p = Engine::from_json(&projected).unwrap();
            assert_eq!(p.to_json(), serde_json::to_string(&p.to_doc()).unwrap());
        }
    }

    #[test]
    fn delta_chains_match_reference(seed in any::<u64>()) {
        let mut m = random_world(seed);
        prop_assume!(m.valid());
        let mut e = load(&m, 1);
        let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        for step in 0..12u64 {
            let mut ops = Vec::new();
            let mut next = Some(m.clone());
            for _ in 0..1 + rng.below(3) {
                let Some(cur) = next.clone() else { break };
                let (op, after) = random_op(&mut rng, &cur);
                ops.push(op);
                next = after;
            }
            let next = next.filter(Model::valid);
            let before = e.to_json();
            let delta = json!({"format": "fleetgate/delta@1", "from": e.revision(), "to": e.revision() + 1, "ops": ops});
            let res = e.apply_delta_json(&delta.to_string());
            match next {
                Some(n) => {
                    prop_assert!(res.is_ok(), "step {step}: {:?} rejected: {:?}", delta, res);
                    m = n;
                }
                None => {
                    prop_assert!(res.is_err(), "step {step}: invalid delta accepted: {delta}");
                    prop_assert_eq!(&e.to_json(), &before, "step {}: failed delta changed the engine", step);
                }
            }
            assert_same(&e, &m);
        }
    }
}
