//! Shared test support: a small, obviously-correct reference model of SPEC §1–§3 and a random
//! world generator. The reference model is written straight from the SPEC, with no index.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

pub const PERMS: [&str; 16] = [
    "devices.add",
    "devices.org.control",
    "devices.org.view",
    "devices.own.control",
    "devices.own.view",
    "devices.remove",
    "devices.transfer",
    "orgs.create",
    "orgs.edit",
    "orgs.switch",
    "roles.edit",
    "users.edit",
    "users.invite",
    "users.remove",
    "users.suspend",
    "users.view",
];

pub type Set = BTreeSet<&'static str>;

pub fn close(mut s: Set) -> Set {
    if s.contains("devices.own.control") {
        s.insert("devices.own.view");
    }
    if s.contains("devices.org.control") {
        s.insert("devices.org.view");
    }
    s
}

fn builtin(role: &str) -> Option<Set> {
    match role {
        "Admin" => Some(PERMS.iter().copied().collect()),
        "Staff" => Some(
            [
                "devices.org.view",
                "devices.org.control",
                "devices.own.view",
                "devices.own.control",
                "devices.add",
                "users.view",
            ]
            .into_iter()
            .collect(),
        ),
        "User" => Some(Set::new()),
        _ => None,
    }
}

#[derive(Clone, Debug)]
pub struct ROrg {
    pub id: String,
    pub parent: Option<String>,
    pub suspended: bool,
    pub plan: String,
    pub roles: Option<BTreeMap<String, Vec<&'static str>>>,
}

#[derive(Clone, Debug)]
pub struct RUser {
    pub id: String,
    pub status: String,
}

#[derive(Clone, Debug)]
pub struct RDevice {
    pub id: String,
    pub org: String,
    pub owner: Option<String>,
}

/// The reference model: plain lists, answers computed by walking them.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub orgs: Vec<ROrg>,
    pub users: Vec<RUser>,
    pub memberships: Vec<(String, String, String)>,
    pub devices: Vec<RDevice>,
}

impl Model {
    pub fn org(&self, id: &str) -> Option<&ROrg> {
        self.orgs.iter().find(|o| o.id == id)
    }
    pub fn ancestors_or_self(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = Some(id.to_owned());
        while let Some(c) = cur {
            if out.contains(&c) || out.len() > 10 {
                break;
            }
            out.push(c.clone());
            cur = self.org(&c).and_then(|o| o.parent.clone());
        }
        out
    }
    pub fn depth(&self, id: &str) -> usize {
        self.ancestors_or_self(id).len()
    }
    pub fn strictly_below(&self, a: &str, anc: &str) -> bool {
        a != anc && self.ancestors_or_self(a).iter().any(|x| x == anc)
    }
    pub fn eff_suspended(&self, id: &str) -> bool {
        self.ancestors_or_self(id).iter().any(|x| self.org(x).is_some_and(|o| o.suspended))
    }
    pub fn role_perms(&self, org: &str, role: &str) -> Option<Set> {
        for a in self.ancestors_or_self(org) {
            if let Some(list) = self.org(&a).and_then(|o| o.roles.as_ref()).and_then(|t| t.get(role)) {
                if role == "Admin" {
                    return builtin("Admin");
                }
                return Some(close(list.iter().copied().collect()));
            }
        }
        builtin(role)
    }
    pub fn active(&self, u: &str) -> bool {
        self.users.iter().any(|x| x.id == u && x.status == "active")
    }
    pub fn mems(&self, u: &str) -> Vec<(String, String, Set)> {
        self.memberships
            .iter()
            .filter(|m| m.0 == u)
            .map(|m| (m.1.clone(), m.2.clone(), self.role_perms(&m.1, &m.2).unwrap_or_default()))
            .collect()
    }
    fn reach(&self, org: &str, perms: &Set) -> Vec<String> {
        self.orgs
            .iter()
            .filter(|o| o.id == org || (perms.contains("orgs.switch") && self.strictly_below(&o.id, org)))
            .map(|o| o.id.clone())
            .collect()
    }

    /// SPEC §3 "Explain", literally.
    pub fn explain(&self, u: &str, d: &str, action: &str) -> Value {
        if !self.users.iter().any(|x| x.id == u) {
            return json!({"allowed": false, "code": "DENY_UNKNOWN_USER"});
        }
        let Some(dev) = self.devices.iter().find(|x| x.id == d) else {
            return json!({"allowed": false, "code": "DENY_UNKNOWN_DEVICE"});
        };
        if !self.active(u) {
            return json!({"allowed": false, "code": "DENY_USER_INACTIVE"});
        }
        // A denied check names the suspended org nearest the device.
        let suspended = |x: &String| self.org(x).is_some_and(|o| o.suspended);
        if let Some(s) = self.ancestors_or_self(&dev.org).into_iter().find(suspended) {
            return json!({"allowed": false, "code": "DENY_ORG_SUSPENDED", "org": s});
        }
        let orgp = if action == "view" { "devices.org.view" } else { "devices.org.control" };
        let ownp = if action == "view" { "devices.own.view" } else { "devices.own.control" };
        let mut best: Option<(u8, i64, String, String, &'static str)> = None;
        for (org, role, p) in self.mems(u) {
            let mut cands = Vec::new();
            if dev.org == org && p.contains(orgp) {
                cands.push((0u8, 0i64, orgp, "ALLOW_ORG"));
            }
            if dev.org == org && dev.owner.as_deref() == Some(u) && p.contains(ownp) {
                cands.push((1, 0, ownp, "ALLOW_OWN"));
            }
            if self.strictly_below(&dev.org, &org) && p.contains("orgs.switch") && p.contains(orgp) {
                cands.push((2, -(self.depth(&org) as i64), orgp, "ALLOW_SUB_ORG"));
            }
            for (rank, near, _, code) in cands {
                if best.as_ref().is_none_or(|b| (rank, near) < (b.0, b.1)) {
                    best = Some((rank, near, org.clone(), role.clone(), code));
                }
            }
        }
        match best {
            // ... and the org-wide permission it would take in the device's org.
            None => json!({"allowed": false, "code": "DENY_NO_PERMISSION", "org": dev.org, "permission": orgp}),
            Some((rank, _, org, role, code)) => json!({
                "allowed": true, "code": code, "org": org, "role": role,
                "permission": if rank == 1 { ownp } else { orgp }
            }),
        }
    }

    pub fn switchable(&self, u: &str) -> Vec<String> {
        if !self.active(u) {
            return Vec::new();
        }
        let mut out = BTreeSet::new();
        for (org, _, p) in self.mems(u) {
            for o in self.reach(&org, &p) {
                if !self.eff_suspended(&o) {
                    out.insert(o);
                }
            }
        }
        out.into_iter().collect()
    }

    pub fn permissions_in(&self, u: &str, org: &str) -> Vec<&'static str> {
        if !self.active(u) || self.org(org).is_none() || self.eff_suspended(org) {
            return Vec::new();
        }
        let mut out = Set::new();
        for (m_org, _, p) in self.mems(u) {
            if self.reach(&m_org, &p).iter().any(|x| x == org) {
                out.extend(p);
            }
        }
        out.into_iter().collect()
    }

    /// `Err(())` stands for NOT_SWITCHABLE.
    pub fn visible(&self, u: &str, action: &str, active: Option<&str>) -> Result<Vec<String>, ()> {
        if let Some(a) = active {
            if !self.switchable(u).iter().any(|x| x == a) {
                return Err(());
            }
        }
        let mut out: Vec<String> = self
            .devices
            .iter()
            .filter(|d| active.is_none_or(|a| d.org == a || self.strictly_below(&d.org, a)))
            .filter(|d| self.explain(u, &d.id, action)["allowed"] == json!(true))
            .map(|d| d.id.clone())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Whether the model satisfies I1–I3 (and has no duplicates).
    pub fn valid(&self) -> bool {
        let ids: BTreeSet<_> = self.orgs.iter().map(|o| &o.id).collect();
        if ids.len() != self.orgs.len() {
            return false;
        }
        for o in &self.orgs {
            if let Some(p) = &o.parent {
                if self.org(p).is_none() {
                    return false;
                }
            }
            let chain = self.ancestors_or_self(&o.id);
            let last = chain.last().unwrap();
            if self.org(last).and_then(|x| x.parent.clone()).is_some() || chain.len() > 5 {
                return false; // a cycle, or deeper than 5
            }
        }
        let mut seen = BTreeSet::new();
        for (u, o, r) in &self.memberships {
            if !seen.insert((u, o))
                || !self.users.iter().any(|x| &x.id == u)
                || self.org(o).is_none()
                || self.role_perms(o, r).is_none()
            {
                return false;
            }
        }
        for d in &self.devices {
            if self.org(&d.org).is_none() {
                return false;
            }
            if let Some(owner) = &d.owner {
                if !self.memberships.iter().any(|m| &m.0 == owner && m.1 == d.org) {
                    return false;
                }
            }
        }
        true
    }

    pub fn to_json(&self, revision: u64) -> Value {
        json!({
            "format": "fleetgate/snapshot@1",
            "revision": revision,
            "orgs": self.orgs.iter().map(|o| {
                let mut v = json!({"id": o.id, "name": format!("Org {}", o.id), "parent": o.parent, "suspended": o.suspended, "plan": o.plan});
                if let Some(t) = &o.roles { v["roles"] = json!(t); }
                v
            }).collect::<Vec<_>>(),
            "users": self.users.iter().map(|u| json!({"id": u.id, "email": format!("{}@example.test", u.id), "name": u.id, "status": u.status})).collect::<Vec<_>>(),
            "memberships": self.memberships.iter().map(|m| json!({"user": m.0, "org": m.1, "role": m.2})).collect::<Vec<_>>(),
            "devices": self.devices.iter().map(|d| json!({"id": d.id, "name": d.id, "org": d.org, "owner": d.owner})).collect::<Vec<_>>(),
        })
    }
}

/// A tiny deterministic generator (xorshift), so that a proptest seed names a whole world.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len()))
        }
    }
}

pub const ROLES: [&str; 5] = ["Admin", "Staff", "User", "Installer", "Viewer"];

pub fn random_perms(rng: &mut Rng) -> Vec<&'static str> {
    let device_heavy =
        ["devices.org.view", "devices.org.control", "devices.own.view", "devices.own.control", "orgs.switch"];
    let mut out: Vec<&'static str> = device_heavy.iter().copied().filter(|_| rng.chance(40)).collect();
    out.extend(PERMS.iter().copied().filter(|_| rng.chance(15)));
    out.sort();
    out.dedup();
    out
}

/// A random valid world: a forest (depth ≤ 5), role tables, users in several orgs, owners, suspensions.
pub fn random_world(seed: u64) -> Model {
    let mut rng = Rng(seed.max(1));
    let mut m = Model::default();
    let n_orgs = 1 + rng.below(11);
    for i in 0..n_orgs {
        let candidates: Vec<String> = m.orgs.iter().filter(|o| m.depth(&o.id) < 5).map(|o| o.id.clone()).collect();
        let parent = if i == 0 || rng.chance(20) { None } else { rng.pick(&candidates).cloned() };
        let roles = if rng.chance(35) {
            let mut t = BTreeMap::new();
            for r in ROLES {
                if rng.chance(40) {
                    t.insert(r.to_owned(), random_perms(&mut rng));
                }
            }
            Some(t)
        } else {
            None
        };
        m.orgs.push(ROrg {
            id: format!("o{i}"),
            parent,
            suspended: rng.chance(10),
            plan: ["free", "plus", "pro"][rng.below(3)].to_owned(),
            roles,
        });
    }
    let n_users = 1 + rng.below(7);
    for i in 0..n_users {
        let status = if rng.chance(80) {
            "active"
        } else if rng.chance(50) {
            "pending"
        } else {
            "suspended"
        };
        m.users.push(RUser { id: format!("u{i}"), status: status.to_owned() });
    }
    for u in 0..n_users {
        for _ in 0..1 + rng.below(3) {
            let org = m.orgs[rng.below(n_orgs)].id.clone();
            let role = ROLES[rng.below(ROLES.len())].to_owned();
            let uid = format!("u{u}");
            if m.role_perms(&org, &role).is_some() && !m.memberships.iter().any(|x| x.0 == uid && x.1 == org) {
                m.memberships.push((uid, org, role));
            }
        }
    }
    for i in 0..rng.below(16) {
        let org = m.orgs[rng.below(n_orgs)].id.clone();
        let members: Vec<String> = m.memberships.iter().filter(|x| x.1 == org).map(|x| x.0.clone()).collect();
        let owner = if rng.chance(50) { rng.pick(&members).cloned() } else { None };
        m.devices.push(RDevice { id: format!("d{i}"), org, owner });
    }
    m
}
