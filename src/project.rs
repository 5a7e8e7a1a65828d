//! Viewer projection (SPEC §4.3): the snapshot a user's browser receives, holding exactly what
//! that user may see; and projected deltas, which move a viewer's old projection to the new one.

use std::collections::{BTreeMap, BTreeSet};

use crate::delta::{Delta, Op};
use crate::engine::Engine;
use crate::model::{builtin_role, Action, Permission, Status};
use crate::snapshot::{DeviceDoc, Id, MembershipDoc, OrgDoc, RoleName, SafeInt, SnapshotDoc, UserDoc, SNAPSHOT_FORMAT};

/// What a delta may change in a viewer's projection, worked out before the delta is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// The delta changes the viewer's reach or permissions (orgs, roles, the viewer's own user or
    /// memberships): compare whole projections.
    pub full: bool,
    devices: BTreeSet<String>,
    users: BTreeSet<String>,
    memberships: BTreeSet<(String, String)>,
}

/// The part of a projection a probe looks at: entities keyed by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Part {
    orgs: BTreeMap<String, OrgDoc>,
    users: BTreeMap<String, UserDoc>,
    memberships: BTreeMap<(String, String), MembershipDoc>,
    devices: BTreeMap<String, DeviceDoc>,
}

impl Part {
    fn of_doc(doc: SnapshotDoc) -> Self {
        Part {
            orgs: doc.orgs.into_iter().map(|o| (o.id.to_string(), o)).collect(),
            users: doc.users.into_iter().map(|u| (u.id.to_string(), u)).collect(),
            memberships: doc.memberships.into_iter().map(|m| ((m.user.to_string(), m.org.to_string()), m)).collect(),
            devices: doc.devices.into_iter().map(|d| (d.id.to_string(), d)).collect(),
        }
    }
}

/// The ops that turn the entities of `before` into those of `after`: removals of what is gone,
/// puts of what is new or changed.
fn diff_ops(before: &Part, after: &Part) -> Vec<Op> {
    let mut ops = Vec::new();
    for (k, m) in &before.memberships {
        if !after.memberships.contains_key(k) {
            ops.push(Op::RemoveMembership { user: m.user.clone(), org: m.org.clone() });
        }
    }
    for (k, d) in &before.devices {
        if !after.devices.contains_key(k) {
            ops.push(Op::RemoveDevice { id: d.id.clone() });
        }
    }
    for (k, u) in &before.users {
        if !after.users.contains_key(k) {
            ops.push(Op::RemoveUser { id: u.id.clone() });
        }
    }
    for (k, o) in &before.orgs {
        if !after.orgs.contains_key(k) {
            ops.push(Op::RemoveOrg { id: o.id.clone() });
        }
    }
    for (k, o) in &after.orgs {
        if before.orgs.get(k) != Some(o) {
            ops.push(Op::PutOrg { org: o.clone() });
        }
    }
    for (k, u) in &after.users {
        if before.users.get(k) != Some(u) {
            ops.push(Op::PutUser { user: u.clone() });
        }
    }
    for (k, m) in &after.memberships {
        if before.memberships.get(k) != Some(m) {
            ops.push(Op::PutMembership { membership: m.clone() });
        }
    }
    for (k, d) in &after.devices {
        if before.devices.get(k) != Some(d) {
            ops.push(Op::PutDevice { device: d.clone() });
        }
    }
    ops
}

/// The delta from one projection part to the next (possibly with no ops).
pub fn projected_delta(before: &Part, after: &Part, from: u64, to: u64) -> Delta {
    Delta::new(from, to, diff_ops(before, after))
}

/// The delta between two whole projections.
pub fn diff_projections(before: SnapshotDoc, after: SnapshotDoc) -> Delta {
    let (from, to) = (before.revision.0, after.revision.0);
    Delta::new(from, to, diff_ops(&Part::of_doc(before), &Part::of_doc(after)))
}

impl Engine {
    /// The projection of the snapshot for `viewer` (SPEC §4.3). An unknown viewer gets an empty one.
    pub fn project(&self, viewer: &str) -> SnapshotDoc {
        let ix = &self.ix;
        let mut doc = SnapshotDoc::empty(self.revision);
        doc.viewer = Id::new(viewer).ok();
        doc.issued_at = self.issued_at.map(SafeInt);
        doc.expires_at = self.expires_at.map(SafeInt);
        let Some(v) = ix.user_ids.get(viewer).filter(|u| ix.user(*u).is_some()) else { return doc };

        // Orgs: switchable orgs plus the orgs of the viewer's memberships.
        let mut in_p = vec![false; ix.orgs.len()];
        let mut orgs: Vec<u32> = Vec::new();
        let mut add = |o: u32, orgs: &mut Vec<u32>| {
            if let Some(f) = in_p.get_mut(o as usize) {
                if !*f {
                    *f = true;
                    orgs.push(o);
                }
            }
        };
        let active = ix.user(v).is_some_and(|r| r.status == Status::Active);
        for m in ix.mems(v) {
            add(m.org, &mut orgs);
            if active {
                let reach: &[u32] =
                    if m.perms.has(Permission::OrgsSwitch) { ix.subtree(m.org) } else { std::slice::from_ref(&m.org) };
                for &o in reach {
                    if !ix.der(o).eff_suspended {
                        add(o, &mut orgs);
                    }
                }
            }
        }
        for &o in &orgs {
            if let Some(d) = self.projected_org(o, &in_p) {
                doc.orgs.push(d);
            }
        }
        doc.orgs.sort_unstable_by(|a, b| a.id.cmp(&b.id));

        // Devices the viewer can view, and their owners.
        let devices = self.visible_slots(viewer, Action::View, None).unwrap_or_default();
        let mut users: BTreeSet<u32> = BTreeSet::new();
        let mut mems: BTreeSet<(u32, u32)> = BTreeSet::new();
        users.insert(v);
        for m in ix.mems(v) {
            mems.insert((v, m.org));
        }
        for &d in &devices {
            if let Some(dev) = ix.device(d) {
                if let Some(w) = dev.owner {
                    users.insert(w);
                    mems.insert((w, dev.org));
                }
            }
            doc.devices.extend(self.device_doc(d));
        }
        // Members of orgs where the viewer holds users.view.
        for &o in &orgs {
            if self.permissions_in_slots(v, o).has(Permission::UsersView) {
                for &u in ix.members_of_org(o) {
                    users.insert(u);
                    mems.insert((u, o));
                }
            }
        }
        doc.users = users.into_iter().filter_map(|u| self.user_doc(u)).collect();
        doc.users.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        doc.memberships =
            mems.into_iter().filter_map(|(u, o)| ix.mem(u, o).map(|m| self.membership_doc(u, o, &m.role))).collect();
        doc.memberships.sort_unstable_by(|a, b| (&a.user, &a.org).cmp(&(&b.user, &b.org)));
        doc.format = SNAPSHOT_FORMAT.to_owned();
        doc
    }

    /// An org as projected: parent = nearest projected ancestor, the effective role table,
    /// effective suspension and its real root's plan.
    fn projected_org(&self, o: u32, in_p: &[bool]) -> Option<OrgDoc> {
        let ix = &self.ix;
        let rec = ix.org(o)?;
        let mut parent = rec.parent;
        while let Some(p) = parent {
            if in_p.get(p as usize).copied().unwrap_or(false) {
                break;
            }
            parent = ix.org(p).and_then(|r| r.parent);
        }
        // Every role name the org resolves: the built-ins and every name in a table at or above it.
        let mut names: BTreeSet<RoleName> =
            ["Admin", "Staff", "User"].into_iter().map(|n| RoleName::trusted(n.to_owned())).collect();
        let mut cur = Some(o);
        while let Some(c) = cur {
            let r = ix.org(c)?;
            names.extend(r.roles.iter().flat_map(|t| t.keys().cloned()));
            cur = r.parent;
        }
        let roles = names
            .into_iter()
            .filter_map(|n| {
                let perms = ix.role_perms(o, n.as_str()).or_else(|| builtin_role(n.as_str()))?;
                Some((n, perms.names().into_iter().map(str::to_owned).collect()))
            })
            .collect();
        let root = ix.org(ix.der(o).root)?;
        Some(OrgDoc {
            id: Id::trusted(ix.org_name(o).to_owned()),
            name: rec.name.clone(),
            parent: parent.map(|p| Id::trusted(ix.org_name(p).to_owned())),
            plan: root.plan,
            suspended: ix.der(o).eff_suspended,
            roles: Some(roles),
        })
    }

    /// Works out, before `delta` is applied, what it may change in `viewer`'s projection.
    pub fn probe(&self, delta: &Delta, viewer: &str) -> Probe {
        let ix = &self.ix;
        let mut p = Probe::default();
        let owner_and_org = |id: &str| {
            ix.dev_ids
                .get(id)
                .and_then(|d| ix.device(d))
                .map(|d| (d.owner.map(|w| ix.user_name(w).to_owned()), ix.org_name(d.org).to_owned()))
        };
        let mut device_facts: Vec<(Option<String>, String)> = Vec::new();
        for op in &delta.ops {
            match op {
                Op::PutOrg { .. } | Op::RemoveOrg { .. } => p.full = true,
                Op::PutUser { user } => {
                    p.full |= user.id.as_str() == viewer;
                    p.users.insert(user.id.to_string());
                }
                Op::RemoveUser { id } => {
                    p.full |= id.as_str() == viewer;
                    p.users.insert(id.to_string());
                }
                Op::PutMembership { membership: m } => {
                    p.full |= m.user.as_str() == viewer;
                    p.users.insert(m.user.to_string());
                    p.memberships.insert((m.user.to_string(), m.org.to_string()));
                }
                Op::RemoveMembership { user, org } => {
                    p.full |= user.as_str() == viewer;
                    p.users.insert(user.to_string());
                    p.memberships.insert((user.to_string(), org.to_string()));
                }
                Op::PutDevice { device } => {
                    device_facts.extend(owner_and_org(device.id.as_str()));
                    device_facts.push((device.owner.as_ref().map(ToString::to_string), device.org.to_string()));
                    p.devices.insert(device.id.to_string());
                }
                Op::RemoveDevice { id } => {
                    device_facts.extend(owner_and_org(id.as_str()));
                    p.devices.insert(id.to_string());
                }
            }
        }
        let orgs: Vec<String> = device_facts.iter().map(|(_, o)| o.clone()).collect();
        for (owner, _) in device_facts {
            if let Some(w) = owner {
                for o in &orgs {
                    p.memberships.insert((w.clone(), o.clone()));
                }
                p.users.insert(w);
            }
        }
        p
    }

    /// The entities of `viewer`'s projection that `probe` looks at (the whole projection when
    /// `probe.full`).
    pub fn projection_part(&self, viewer: &str, probe: &Probe) -> Part {
        if probe.full {
            return Part::of_doc(self.project(viewer));
        }
        let ix = &self.ix;
        let mut part = Part::default();
        let Some(v) = ix.user_ids.get(viewer).filter(|u| ix.user(*u).is_some()) else { return part };
        let sees = |d: u32| {
            ix.device(d).is_some_and(|dev| {
                matches!(self.verdict_slots(v, dev, Action::View), crate::decide::Verdict::Allow(..))
            })
        };
        let users_view = |o: u32| self.permissions_in_slots(v, o).has(Permission::UsersView);
        for id in &probe.devices {
            if let Some(d) = ix.dev_ids.get(id).filter(|d| sees(*d)) {
                part.devices.extend(self.device_doc(d).map(|doc| (id.clone(), doc)));
            }
        }
        for id in &probe.users {
            let Some(u) = ix.user_ids.get(id).filter(|u| ix.user(*u).is_some()) else { continue };
            let included =
                u == v || ix.owned_by(u).iter().any(|d| sees(*d)) || ix.mems(u).iter().any(|m| users_view(m.org));
            if included {
                part.users.extend(self.user_doc(u).map(|doc| (id.clone(), doc)));
            }
        }
        for (uid, oid) in &probe.memberships {
            let (Some(u), Some(o)) = (ix.user_ids.get(uid), ix.org_ids.get(oid)) else { continue };
            let Some(m) = ix.mem(u, o) else { continue };
            let included = u == v
                || users_view(o)
                || ix.owned_by(u).iter().any(|d| ix.device(*d).is_some_and(|x| x.org == o) && sees(*d));
            if included {
                part.memberships.insert((uid.clone(), oid.clone()), self.membership_doc(u, o, &m.role));
            }
        }
        part
    }
}
