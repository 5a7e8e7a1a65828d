//! Viewer projection (SPEC §4.3): the snapshot a user's browser receives, holding exactly what
//! that user may see; and projected deltas, which move a viewer's old projection to the new one.

use std::collections::{BTreeMap, BTreeSet};

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use crate::delta::{Delta, Op};
use crate::engine::Engine;
use crate::index::{DeviceSlot, OrgSlot, Slot, UserSlot};
use crate::model::{Action, Permission, Status};
use crate::snapshot::{DeviceDoc, Id, MembershipDoc, OrgDoc, RoleName, SafeInt, SnapshotDoc, UserDoc, SNAPSHOT_FORMAT};

/// The slots a snapshot or a projection holds, each list in ascending id order.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    in_p: Vec<bool>,
    pub(crate) orgs: Vec<OrgSlot>,
    pub(crate) users: Vec<UserSlot>,
    /// (user, org) pairs.
    pub(crate) memberships: Vec<(UserSlot, OrgSlot)>,
    pub(crate) devices: Vec<DeviceSlot>,
}

/// A snapshot document serialized straight from the index, to any serde format (JSON text for
/// the server, a JS object at the wasm boundary): the whole snapshot ([`Engine::snapshot_view`])
/// or a viewer's projection ([`Engine::project_view`]).
pub struct SnapshotView<'a> {
    engine: &'a Engine,
    /// The projection's viewer; `None` for the whole snapshot.
    viewer: Option<&'a str>,
    slots: Slots,
}

impl SnapshotView<'_> {
    /// The slots it writes, in its order.
    pub(crate) fn slots(&self) -> &Slots {
        &self.slots
    }
}

impl Serialize for SnapshotView<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
        let e = self.engine;
        let ix = &e.ix;
        let slots = &self.slots;
        // A struct, not a map: fixed keys make smaller code in every format (0.7 KB of the .wasm
        // when it was built by serde-wasm-bindgen), with the same fields in the same order.
        let mut doc = ser.serialize_struct("Snapshot", 9)?;
        doc.serialize_field("format", SNAPSHOT_FORMAT)?;
        doc.serialize_field("revision", &e.revision)?;
        let viewer = match self.viewer {
            Some(v) => e.projected_viewer(v),
            None => e.viewer.clone(),
        };
        doc.serialize_field("viewer", &viewer)?;
        if let Some(t) = e.issued_at {
            doc.serialize_field("issuedAt", &t)?;
        } else {
            doc.skip_field("issuedAt")?;
        }
        if let Some(t) = e.expires_at {
            doc.serialize_field("expiresAt", &t)?;
        } else {
            doc.skip_field("expiresAt")?;
        }
        let full = self.viewer.is_none();
        let org = |&o: &OrgSlot| if full { e.org_doc(o) } else { e.projected_org(o, &slots.in_p) };
        doc.serialize_field("orgs", &Seq(slots.orgs.iter().filter_map(org)))?;
        doc.serialize_field(
            "users",
            &Seq(slots.users.iter().filter_map(|&u| {
                ix.user(u).map(|r| UserView { id: ix.user_name(u), email: &r.email, name: &r.name, status: r.status })
            })),
        )?;
        doc.serialize_field(
            "memberships",
            &Seq(slots.memberships.iter().filter_map(|&(u, o)| {
                ix.mem(u, o).map(|m| MembershipView {
                    user: ix.user_name(u),
                    org: ix.org_name(o),
                    role: m.role.as_str(),
                })
            })),
        )?;
        doc.serialize_field(
            "devices",
            &Seq(slots.devices.iter().filter_map(|&d| {
                ix.device(d).map(|dev| DeviceView {
                    id: ix.device_name(d),
                    name: &dev.name,
                    org: ix.org_name(dev.org),
                    owner: dev.owner.map(|w| ix.user_name(w)),
                })
            })),
        )?;
        doc.end()
    }
}

/// Serializes an iterator as a sequence, once.
struct Seq<I>(I);

impl<I: Iterator<Item = T> + Clone, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
        ser.collect_seq(self.0.clone())
    }
}

#[derive(Serialize)]
struct UserView<'a> {
    id: &'a str,
    email: &'a str,
    name: &'a str,
    status: Status,
}

#[derive(Serialize)]
struct MembershipView<'a> {
    user: &'a str,
    org: &'a str,
    role: &'a str,
}

#[derive(Serialize)]
struct DeviceView<'a> {
    id: &'a str,
    name: &'a str,
    org: &'a str,
    owner: Option<&'a str>,
}

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
    /// The projection of the snapshot for `viewer` (SPEC §4.3). An unknown viewer gets an empty
    /// snapshot with `viewer: null`: a projection names its viewer among its users, and an
    /// unknown viewer has nothing to name (so every projection loads).
    pub fn project(&self, viewer: &str) -> SnapshotDoc {
        let slots = self.projection_slots(viewer);
        let ix = &self.ix;
        let mut doc = SnapshotDoc::empty(self.revision);
        doc.viewer = self.projected_viewer(viewer);
        doc.issued_at = self.issued_at.map(SafeInt);
        doc.expires_at = self.expires_at.map(SafeInt);
        doc.orgs = slots.orgs.iter().filter_map(|&o| self.projected_org(o, &slots.in_p)).collect();
        doc.users = slots.users.iter().filter_map(|&u| self.user_doc(u)).collect();
        doc.memberships = slots
            .memberships
            .iter()
            .filter_map(|&(u, o)| ix.mem(u, o).map(|m| self.membership_doc(u, o, &m.role)))
            .collect();
        doc.devices = slots.devices.iter().filter_map(|&d| self.device_doc(d)).collect();
        doc
    }

    /// The projection for `viewer` as JSON text, written straight from the index (the server's
    /// hot path: no intermediate documents).
    pub fn project_json(&self, viewer: &str) -> String {
        serde_json::to_string(&self.project_view(viewer)).unwrap_or_default()
    }

    /// The projection for `viewer` (what [`Engine::project_json`] writes) as a value that
    /// serializes straight from the index, to any serde format.
    pub fn project_view<'a>(&'a self, viewer: &'a str) -> SnapshotView<'a> {
        SnapshotView { engine: self, viewer: Some(viewer), slots: self.projection_slots(viewer) }
    }

    /// The whole snapshot (what [`Engine::to_doc`] holds: every list in ascending id order,
    /// defaults explicit) as a value that serializes straight from the index.
    pub fn snapshot_view(&self) -> SnapshotView<'_> {
        let ix = &self.ix;
        let mut orgs: Vec<OrgSlot> = ix.org_slots().filter(|o| ix.org_present(*o)).collect();
        ix.org_ids.sort(&mut orgs);
        let mut users: Vec<UserSlot> = ix.user_slots().filter(|u| ix.user(*u).is_some()).collect();
        ix.user_ids.sort(&mut users);
        let mut memberships: Vec<(UserSlot, OrgSlot)> = Vec::with_capacity(ix.membership_count);
        for u in ix.user_slots() {
            memberships.extend(ix.mems(u).iter().map(|m| (u, m.org)));
        }
        crate::index::sort_pairs(&mut memberships, &|a, b| ix.membership_cmp(a, b));
        let devices = ix.by_id.iter().copied().filter(|d| ix.device(*d).is_some()).collect();
        SnapshotView {
            engine: self,
            viewer: None,
            slots: Slots { in_p: Vec::new(), orgs, users, memberships, devices },
        }
    }

    /// The `viewer` of the projection for `viewer`: itself when it is a user, else none.
    fn projected_viewer(&self, viewer: &str) -> Option<Id> {
        let ix = &self.ix;
        ix.user_ids.get(viewer).filter(|u| ix.user(*u).is_some()).and_then(|_| Id::new(viewer).ok())
    }

    /// What the projection for `viewer` holds, as slots, each list in ascending id order.
    fn projection_slots(&self, viewer: &str) -> Slots {
        let ix = &self.ix;
        let mut slots = Slots { in_p: vec![false; ix.orgs.len()], ..Slots::default() };
        let Some(v) = ix.user_ids.get(viewer).filter(|u| ix.user(*u).is_some()) else { return slots };

        // Orgs: switchable orgs plus the orgs of the viewer's memberships.
        let active = ix.is_active(v);
        let mut orgs: Vec<OrgSlot> = Vec::new();
        for m in ix.mems(v) {
            orgs.push(m.org);
            if active {
                let reach: &[OrgSlot] =
                    if m.perms.has(Permission::OrgsSwitch) { ix.subtree(m.org) } else { std::slice::from_ref(&m.org) };
                orgs.extend(reach.iter().filter(|o| !ix.der(**o).eff_suspended));
            }
        }
        orgs.retain(|&o| match slots.in_p.get_mut(o.index()) {
            Some(f) if !*f => {
                *f = true;
                true
            }
            _ => false,
        });
        ix.org_ids.sort(&mut orgs);

        // Devices the viewer can view, and their owners (with their memberships there).
        slots.devices = self.visible_slots(viewer, Action::View, None).unwrap_or_default();
        // Each user and membership once (seen-marks), then sorted by id.
        let mut seen_user = vec![false; ix.users.len()];
        let mut seen_mem: rustc_hash::FxHashSet<(UserSlot, OrgSlot)> = rustc_hash::FxHashSet::default();
        let mut users: Vec<UserSlot> = Vec::new();
        let mut mems: Vec<(UserSlot, OrgSlot)> = Vec::new();
        let mut add =
            |u: UserSlot, o: Option<OrgSlot>, users: &mut Vec<UserSlot>, mems: &mut Vec<(UserSlot, OrgSlot)>| {
                if let Some(seen) = seen_user.get_mut(u.index()) {
                    if !*seen {
                        *seen = true;
                        users.push(u);
                    }
                }
                if let Some(o) = o {
                    if seen_mem.insert((u, o)) {
                        mems.push((u, o));
                    }
                }
            };
        add(v, None, &mut users, &mut mems);
        for m in ix.mems(v) {
            add(v, Some(m.org), &mut users, &mut mems);
        }
        for &d in &slots.devices {
            if let Some((w, o)) = ix.device(d).and_then(|dev| dev.owner.map(|w| (w, dev.org))) {
                add(w, Some(o), &mut users, &mut mems);
            }
        }
        // Members of orgs where the viewer holds users.view.
        for &o in &orgs {
            if self.permissions_in_slots(v, o).has(Permission::UsersView) {
                for &u in ix.members_of_org(o) {
                    add(u, Some(o), &mut users, &mut mems);
                }
            }
        }
        ix.user_ids.sort(&mut users);
        crate::index::sort_pairs(&mut mems, &|a, b| ix.membership_cmp(a, b));
        slots.orgs = orgs;
        slots.users = users;
        slots.memberships = mems;
        slots
    }

    /// The effective role table of `o`: every role it resolves, with its closed permissions.
    fn effective_roles(&self, o: OrgSlot) -> BTreeMap<&str, Vec<&'static str>> {
        let ix = &self.ix;
        // Inserts rather than `collect`: collecting into a BTreeMap pulls in a stable sort.
        let mut table = BTreeMap::new();
        let mut add = |n| {
            if let Some(p) = ix.role_perms(o, n) {
                table.entry(n).or_insert_with(|| p.names());
            }
        };
        ["Admin", "Staff", "User"].into_iter().for_each(&mut add);
        let mut cur = Some(o);
        while let Some(c) = cur {
            let Some(r) = ix.org(c) else { break };
            r.roles.iter().flat_map(|t| t.keys().map(RoleName::as_str)).for_each(&mut add);
            cur = r.parent;
        }
        table
    }

    /// The projected parent of `o`: its nearest ancestor in the projection.
    fn projected_parent(&self, o: OrgSlot, in_p: &[bool]) -> Option<OrgSlot> {
        let ix = &self.ix;
        let mut parent = ix.org(o)?.parent;
        while let Some(p) = parent {
            if in_p.get(p.index()).copied().unwrap_or(false) {
                return Some(p);
            }
            parent = ix.org(p).and_then(|r| r.parent);
        }
        None
    }

    /// An org as projected: parent = nearest projected ancestor, the effective role table,
    /// effective suspension and its real root's plan.
    fn projected_org(&self, o: OrgSlot, in_p: &[bool]) -> Option<OrgDoc> {
        let ix = &self.ix;
        let rec = ix.org(o)?;
        let roles = self
            .effective_roles(o)
            .into_iter()
            .map(|(n, p)| (RoleName::trusted(n.to_owned()), p.into_iter().map(str::to_owned).collect()))
            .collect();
        Some(OrgDoc {
            id: Id::trusted(ix.org_name(o).to_owned()),
            name: rec.name.clone(),
            parent: self.projected_parent(o, in_p).map(|p| Id::trusted(ix.org_name(p).to_owned())),
            plan: ix.org(ix.der(o).root).map_or(rec.plan, |r| r.plan),
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
        let sees = |d: DeviceSlot| self.can_slots(v, d, Action::View);
        let users_view = |o: OrgSlot| self.permissions_in_slots(v, o).has(Permission::UsersView);
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
