//! A seeded generator of large, realistic worlds for benchmarks, load tests and demos.
//!
//! One manufacturer root, regional offices, distributors, dealers and end clients over five
//! levels; every org has an Admin and staff; end clients have owners and family members; a
//! third of the devices are owned.

use std::collections::BTreeMap;

use crate::model::Plan;
use crate::snapshot::{DeviceDoc, Id, MembershipDoc, OrgDoc, RoleName, SafeInt, SnapshotDoc, UserDoc};
use crate::Status;

/// The shape of a generated world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorldSize {
    /// Children per org at levels 1→2, 2→3, 3→4, 4→5.
    pub fanout: [usize; 4],
    /// Number of users.
    pub users: usize,
    /// Number of devices.
    pub devices: usize,
    /// Seed of the generator.
    pub seed: u64,
}

impl WorldSize {
    /// The benchmark world: 1 root, 1,993 orgs over 5 levels, 20,000 users, 100,000 devices.
    pub const LARGE: WorldSize = WorldSize { fanout: [8, 8, 6, 4], users: 20_000, devices: 100_000, seed: 42 };
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn id(s: String) -> Id {
    // Generated ids are built from [a-z0-9-] and are always valid.
    Id::trusted(s)
}

fn role(s: &str) -> RoleName {
    RoleName::trusted(s.to_owned())
}

/// Generates a valid snapshot of the given size.
pub fn generate(size: WorldSize) -> SnapshotDoc {
    let mut rng = Rng(size.seed);
    let mut doc = SnapshotDoc::empty(1);
    // Orgs, level by level. `levels[i]` holds the org ids at depth i + 1.
    let mut levels: Vec<Vec<String>> = vec![vec!["acme".to_owned()]];
    let mut client_table = BTreeMap::new();
    client_table.insert(role("User"), vec!["devices.own.control".to_owned()]);
    doc.orgs.push(OrgDoc {
        id: id("acme".into()),
        name: "ACME Devices".into(),
        parent: None,
        plan: Plan::Pro,
        suspended: false,
        roles: None,
    });
    let names = ["Region", "Distributor", "Dealer", "Client"];
    for (level, &fan) in size.fanout.iter().enumerate() {
        let mut next = Vec::new();
        for parent in levels.last().map(Vec::as_slice).unwrap_or(&[]) {
            for k in 0..fan {
                let oid = format!("{parent}-{k}");
                doc.orgs.push(OrgDoc {
                    id: id(oid.clone()),
                    name: format!("{} {oid}", names.get(level).copied().unwrap_or("Org")),
                    parent: Some(id(parent.clone())),
                    plan: Plan::Pro,
                    suspended: false,
                    roles: (level + 1 == size.fanout.len()).then(|| client_table.clone()),
                });
                next.push(oid);
            }
        }
        levels.push(next);
    }
    let all_orgs: Vec<String> = levels.iter().flatten().cloned().collect();
    let leaves: Vec<String> = levels.last().cloned().unwrap_or_default();
    // Users: the first user is the manufacturer's admin; one Admin per non-leaf org; the rest
    // are staff of random orgs or members of end clients.
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut user_ids = Vec::with_capacity(size.users);
    for i in 0..size.users {
        let uid = format!("u{i:06}");
        doc.users.push(UserDoc {
            id: id(uid.clone()),
            email: format!("{uid}@example.test"),
            name: format!("User {i}"),
            status: if i % 97 == 96 { Status::Pending } else { Status::Active },
        });
        let (org, r) = if i == 0 {
            ("acme".to_owned(), "Admin")
        } else if let Some(o) = all_orgs.get(i).filter(|_| levels.len() > 1 && i < all_orgs.len() - leaves.len()) {
            (o.clone(), "Admin")
        } else if i % 5 == 0 {
            (all_orgs.get(rng.below(all_orgs.len())).cloned().unwrap_or_default(), "Staff")
        } else {
            (
                leaves.get(rng.below(leaves.len())).cloned().unwrap_or_default(),
                if i % 3 == 0 { "Admin" } else { "User" },
            )
        };
        if org.is_empty() {
            continue;
        }
        doc.memberships.push(MembershipDoc { user: id(uid.clone()), org: id(org.clone()), role: role(r) });
        members.entry(org).or_default().push(uid.clone());
        user_ids.push(uid);
    }
    // Devices: 90% at end clients, the rest anywhere; a third owned by a member of their org.
    for i in 0..size.devices {
        let org = if i % 10 == 9 || leaves.is_empty() {
            all_orgs.get(rng.below(all_orgs.len())).cloned().unwrap_or_default()
        } else {
            leaves.get(rng.below(leaves.len())).cloned().unwrap_or_default()
        };
        let owner = if i % 3 == 0 { members.get(&org).and_then(|m| m.get(rng.below(m.len()))).cloned() } else { None };
        doc.devices.push(DeviceDoc {
            id: id(format!("d{i:06}")),
            name: format!("Device {i}"),
            org: id(org),
            owner: owner.map(id),
        });
    }
    doc.revision = SafeInt(1);
    doc
}
