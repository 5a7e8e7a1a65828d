//! The compiled, indexed form the engine queries: interned ids, org pre/post-order intervals,
//! per-org device and member lists, per-user memberships and owned devices, devices in id order.
//!
//! Every entity lives in a slot named by its interned id. A slot may be vacant (the id is
//! referenced but the entity is absent): that is how a delta can be applied op by op in
//! place, validated as a whole, and undone exactly when it fails.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::error::{Error, ErrorCode, Result};
use crate::model::{builtin_role, Perms, Plan, Status, ADMIN_ROLE, MAX_DEPTH};
use crate::snapshot::RoleName;

mod intern;
pub(crate) use intern::Interner;

/// Marks "no slot" in `u32` slot fields.
pub(crate) const NONE: u32 = u32::MAX;

/// Sorts slots with `cmp`. Every sort of slots in the crate goes through here (and pairs through
/// [`sort_pairs`]) with a `dyn` comparator, so the sort code is instantiated once: each
/// instantiation of the standard sorts adds about 5 KB to the `.wasm`.
pub(crate) fn sort_slots(v: &mut [u32], cmp: &dyn Fn(u32, u32) -> Ordering) {
    v.sort_unstable_by(|a, b| cmp(*a, *b));
}

/// Sorts slot pairs with `cmp` (see [`sort_slots`]).
pub(crate) fn sort_pairs(v: &mut [(u32, u32)], cmp: &dyn Fn((u32, u32), (u32, u32)) -> Ordering) {
    v.sort_unstable_by(|a, b| cmp(*a, *b));
}

/// A role table entry: the closed permission set a role has in an org.
pub(crate) type RoleTable = BTreeMap<RoleName, Perms>;

/// An org as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrgRec {
    pub name: String,
    pub parent: Option<u32>,
    pub plan: Plan,
    pub suspended: bool,
    pub roles: Option<RoleTable>,
}

/// What the engine derives from the org forest (valid for present orgs after `recompute_orgs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct OrgDerived {
    /// Position in the pre-order walk.
    pub pre: u32,
    /// Largest `pre` in the subtree: the subtree is `pre..=post`.
    pub post: u32,
    /// 1 for a root.
    pub depth: u8,
    /// The org or an ancestor is suspended.
    pub eff_suspended: bool,
    /// The root of its tree.
    pub root: u32,
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserRec {
    pub email: String,
    pub name: String,
    pub status: Status,
}

/// A membership as stored on its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mem {
    pub org: u32,
    pub role: RoleName,
    /// The closed permissions of `role` in `org` (kept current by `settle`).
    pub perms: Perms,
}

/// The stored facts of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceData {
    pub name: String,
    pub org: u32,
    pub owner: Option<u32>,
}

/// Where a device is: its org and owner slots (`NONE` for no owner; both `NONE` while absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub org: u32,
    pub owner: u32,
}

impl Place {
    /// The place of a vacant device slot.
    pub const VACANT: Place = Place { org: NONE, owner: NONE };

    /// The place of a device (vacant for `None`).
    pub fn of(device: Option<&DeviceData>) -> Place {
        device.map_or(Self::VACANT, |d| Place { org: d.org, owner: d.owner.unwrap_or(NONE) })
    }
}

/// A device as stored, with its positions in the per-org and per-owner lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DevRec {
    pub data: DeviceData,
    pos_org: u32,
    pos_owner: u32,
}

/// One step to undo, recorded by each primitive change.
#[derive(Debug, Clone)]
pub(crate) enum Undo {
    Org(u32, Option<OrgRec>),
    User(u32, Option<UserRec>),
    Membership(u32, u32, Option<RoleName>),
    Device(u32, Option<DeviceData>),
}

/// What a batch of changes touched, for validating only that.
#[derive(Debug, Clone, Default)]
pub(crate) struct Touched {
    pub orgs_changed: bool,
    pub orgs_removed: Vec<u32>,
    pub users_removed: Vec<u32>,
    pub memberships: Vec<(u32, u32)>,
    pub devices: Vec<u32>,
    /// Everything changed: check every entity.
    pub all: bool,
}

/// Interner lengths, to forget ids first seen by a failed batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marks {
    orgs: usize,
    users: usize,
    devices: usize,
}

/// The indexed state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    pub org_ids: Interner,
    pub orgs: Vec<Option<OrgRec>>,
    pub derived: Vec<OrgDerived>,
    pub children: Vec<Vec<u32>>,
    /// The devices of each org, in ascending id order.
    // INVARIANT: after `settle` (and after loading) every list is in ascending id order;
    // `unsorted_orgs` names the orgs whose list a change since may have put out of order.
    pub org_devices: Vec<Vec<u32>>,
    unsorted_orgs: Vec<u32>,
    pub org_members: Vec<Vec<u32>>,
    /// Present orgs in pre-order: the subtree of `o` is `preorder[pre(o)..=post(o)]`.
    pub preorder: Vec<u32>,

    pub user_ids: Interner,
    pub users: Vec<Option<UserRec>>,
    pub user_mems: Vec<Vec<Mem>>,
    pub owned: Vec<Vec<u32>>,

    pub dev_ids: Interner,
    pub devices: Vec<Option<DevRec>>,
    /// The org and owner of each device slot: what a check needs, 8 bytes a device, so that a
    /// check reads them without the device record.
    // INVARIANT (the device-org cache): `places[d] == Place::of(device(d))` — the device's org
    // and owner (`NONE` for none) for a present device, both `NONE` for a vacant slot — kept by
    // `set_device`, the only writer of `devices`.
    pub places: Vec<Place>,
    /// Present device slots in ascending id order.
    pub by_id: Vec<u32>,
    /// The position of each device slot in `by_id` (its rank in id order), `NONE` when absent.
    // INVARIANT: after `settle` (and after loading), `by_id[rank[d]] == d` for every present
    // device; `ranks_stale` is set whenever `by_id` gains or loses a device and cleared by
    // `rerank`, which `settle` runs first.
    pub rank: Vec<u32>,
    ranks_stale: bool,
    /// While loading, `by_id` is built once at the end.
    bulk: bool,

    pub org_count: usize,
    pub user_count: usize,
    pub device_count: usize,
    pub membership_count: usize,
}

fn vec_at<T>(v: &mut [T], i: u32) -> Option<&mut T> {
    v.get_mut(i as usize)
}

/// Removes `pos` from `list` by swapping in the last element; returns the element moved into `pos`.
fn swap_out(list: &mut Vec<u32>, pos: u32) -> Option<u32> {
    let pos = pos as usize;
    if pos >= list.len() {
        return None;
    }
    list.swap_remove(pos);
    list.get(pos).copied()
}

impl Index {
    /// An empty index for loading about `orgs`, `users` and `devices` entities at once.
    pub(crate) fn new_bulk(orgs: usize, users: usize, devices: usize) -> Self {
        let mut ix = Self { bulk: true, ..Self::default() };
        ix.org_ids.reserve(orgs);
        ix.user_ids.reserve(users);
        ix.dev_ids.reserve(devices);
        ix.devices.reserve(devices);
        ix
    }

    // ---- lookups -------------------------------------------------------------------------

    #[inline(always)]
    pub(crate) fn org(&self, o: u32) -> Option<&OrgRec> {
        self.orgs.get(o as usize)?.as_ref()
    }

    #[inline(always)]
    pub(crate) fn der(&self, o: u32) -> OrgDerived {
        self.derived.get(o as usize).copied().unwrap_or_default()
    }

    #[inline(always)]
    pub(crate) fn user(&self, u: u32) -> Option<&UserRec> {
        self.users.get(u as usize)?.as_ref()
    }

    #[inline(always)]
    pub(crate) fn mems(&self, u: u32) -> &[Mem] {
        self.user_mems.get(u as usize).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn mem(&self, u: u32, o: u32) -> Option<&Mem> {
        self.mems(u).iter().find(|m| m.org == o)
    }

    /// The org and owner of device slot `d` (`NONE`s when the device is absent).
    #[inline(always)]
    pub(crate) fn place(&self, d: u32) -> Place {
        self.places.get(d as usize).copied().unwrap_or(Place::VACANT)
    }

    /// The org of device slot `d`, `NONE` when the device is absent.
    #[inline(always)]
    pub(crate) fn device_org(&self, d: u32) -> u32 {
        self.place(d).org
    }

    /// The rank of device slot `d` in id order, `NONE` when the device is absent.
    #[inline(always)]
    pub(crate) fn device_rank(&self, d: u32) -> u32 {
        self.rank.get(d as usize).copied().unwrap_or(NONE)
    }

    #[inline(always)]
    pub(crate) fn device(&self, d: u32) -> Option<&DeviceData> {
        self.devices.get(d as usize)?.as_ref().map(|r| &r.data)
    }

    pub(crate) fn devices_of_org(&self, o: u32) -> &[u32] {
        self.org_devices.get(o as usize).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn members_of_org(&self, o: u32) -> &[u32] {
        self.org_members.get(o as usize).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn owned_by(&self, u: u32) -> &[u32] {
        self.owned.get(u as usize).map_or(&[], Vec::as_slice)
    }

    /// The present orgs of the subtree of `o` (itself first), in pre-order.
    pub(crate) fn subtree(&self, o: u32) -> &[u32] {
        let d = self.der(o);
        self.preorder.get(d.pre as usize..=d.post as usize).unwrap_or(&[])
    }

    /// Whether `a` is `anc` or one of its descendants. O(1).
    #[inline(always)]
    pub(crate) fn in_subtree(&self, a: u32, anc: u32) -> bool {
        let (da, dn) = (self.der(a), self.der(anc));
        dn.pre <= da.pre && da.pre <= dn.post
    }

    /// Whether `a` is a strict descendant of `anc`. O(1).
    #[inline(always)]
    pub(crate) fn strictly_below(&self, a: u32, anc: u32) -> bool {
        a != anc && self.in_subtree(a, anc)
    }

    /// Orders (user, org) pairs by user id, then org id.
    pub(crate) fn membership_cmp(&self, a: (u32, u32), b: (u32, u32)) -> Ordering {
        self.user_ids.cmp(a.0, b.0).then_with(|| self.org_ids.cmp(a.1, b.1))
    }

    pub(crate) fn org_present(&self, o: u32) -> bool {
        self.org(o).is_some()
    }

    pub(crate) fn org_name(&self, o: u32) -> &str {
        self.org_ids.name(o)
    }

    pub(crate) fn user_name(&self, u: u32) -> &str {
        self.user_ids.name(u)
    }

    pub(crate) fn device_name(&self, d: u32) -> &str {
        self.dev_ids.name(d)
    }

    /// The closed permissions of role `role` in org `o`, or `None` when it is undefined there.
    pub(crate) fn role_perms(&self, o: u32, role: &str) -> Option<Perms> {
        let mut cur = Some(o);
        let mut steps = 0u8;
        while let Some(c) = cur {
            let rec = self.org(c)?;
            if let Some(p) = rec.roles.as_ref().and_then(|t| t.iter().find(|(k, _)| k.as_str() == role)) {
                return Some(if role == ADMIN_ROLE { Perms::ALL } else { *p.1 });
            }
            cur = rec.parent;
            steps += 1;
            if steps > MAX_DEPTH {
                break;
            }
        }
        builtin_role(role)
    }

    // ---- primitive changes (infallible; each returns what it replaced) -----------------------

    fn ensure_org_slot(&mut self, o: u32) {
        let n = o as usize + 1;
        if self.orgs.len() < n {
            self.orgs.resize(n, None);
            self.derived.resize(n, OrgDerived::default());
            self.children.resize(n, Vec::new());
            self.org_devices.resize(n, Vec::new());
            self.org_members.resize(n, Vec::new());
        }
    }

    fn ensure_user_slot(&mut self, u: u32) {
        let n = u as usize + 1;
        if self.users.len() < n {
            self.users.resize(n, None);
            self.user_mems.resize(n, Vec::new());
            self.owned.resize(n, Vec::new());
        }
    }

    fn ensure_device_slot(&mut self, d: u32) {
        let n = d as usize + 1;
        if self.devices.len() < n {
            self.devices.resize(n, None);
            self.places.resize(n, Place::VACANT);
            self.rank.resize(n, NONE);
        }
    }

    pub(crate) fn intern_org(&mut self, id: &str) -> u32 {
        let o = self.org_ids.intern(id);
        self.ensure_org_slot(o);
        o
    }

    pub(crate) fn intern_user(&mut self, id: &str) -> u32 {
        let u = self.user_ids.intern(id);
        self.ensure_user_slot(u);
        u
    }

    pub(crate) fn intern_device(&mut self, id: &str) -> u32 {
        let d = self.dev_ids.intern(id);
        self.ensure_device_slot(d);
        d
    }

    pub(crate) fn set_org(&mut self, o: u32, rec: Option<OrgRec>) -> Option<OrgRec> {
        self.ensure_org_slot(o);
        let slot = vec_at(&mut self.orgs, o)?;
        let old = std::mem::replace(slot, rec);
        match (&old, slot.is_some()) {
            (None, true) => self.org_count += 1,
            (Some(_), false) => self.org_count -= 1,
            _ => {}
        }
        old
    }

    pub(crate) fn set_user(&mut self, u: u32, rec: Option<UserRec>) -> Option<UserRec> {
        self.ensure_user_slot(u);
        let slot = vec_at(&mut self.users, u)?;
        let old = std::mem::replace(slot, rec);
        match (&old, slot.is_some()) {
            (None, true) => self.user_count += 1,
            (Some(_), false) => self.user_count -= 1,
            _ => {}
        }
        old
    }

    /// Sets or removes the membership of `u` in `o`; returns the previous role.
    pub(crate) fn set_membership(&mut self, u: u32, o: u32, role: Option<RoleName>) -> Option<RoleName> {
        self.ensure_user_slot(u);
        self.ensure_org_slot(o);
        let mems = vec_at(&mut self.user_mems, u)?;
        let pos = mems.iter().position(|m| m.org == o);
        let old = match (pos, role) {
            (Some(i), Some(role)) => mems.get_mut(i).map(|m| std::mem::replace(&mut m.role, role)),
            (Some(i), None) => {
                let old = mems.remove(i).role;
                self.membership_count -= 1;
                if let Some(members) = vec_at(&mut self.org_members, o) {
                    if let Some(j) = members.iter().position(|x| *x == u) {
                        members.swap_remove(j);
                    }
                }
                Some(old)
            }
            (None, Some(role)) => {
                mems.push(Mem { org: o, role, perms: Perms::NONE });
                self.membership_count += 1;
                if let Some(members) = vec_at(&mut self.org_members, o) {
                    members.push(u);
                }
                None
            }
            (None, None) => None,
        };
        old
    }

    /// Sets or removes device `d`; returns its previous facts.
    pub(crate) fn set_device(&mut self, d: u32, data: Option<DeviceData>) -> Option<DeviceData> {
        self.ensure_device_slot(d);
        let old = self.devices.get_mut(d as usize).and_then(Option::take);
        if let Some(old) = &old {
            self.unlink_device(old);
            if !self.bulk {
                self.unsorted_orgs.push(old.data.org);
            }
        }
        let present_now = data.is_some();
        if let Some(data) = data {
            self.ensure_org_slot(data.org);
            if !self.bulk {
                self.unsorted_orgs.push(data.org);
            }
            let pos_org = self.org_devices.get(data.org as usize).map_or(0, Vec::len) as u32;
            if let Some(list) = vec_at(&mut self.org_devices, data.org) {
                list.push(d);
            }
            let mut pos_owner = NONE;
            if let Some(owner) = data.owner {
                self.ensure_user_slot(owner);
                if let Some(list) = vec_at(&mut self.owned, owner) {
                    pos_owner = list.len() as u32;
                    list.push(d);
                }
            }
            if let Some(slot) = vec_at(&mut self.devices, d) {
                *slot = Some(DevRec { data, pos_org, pos_owner });
            }
        }
        let place = Place::of(self.device(d));
        if let Some(slot) = vec_at(&mut self.places, d) {
            *slot = place;
        }

        match (old.is_some(), present_now) {
            (false, true) => {
                self.device_count += 1;
                if !self.bulk {
                    let at = self.by_id_position(self.dev_ids.name(d));
                    self.by_id.insert(at, d);
                    self.ranks_stale = true;
                }
            }
            (true, false) => {
                self.device_count -= 1;
                let at = self.by_id_position(self.dev_ids.name(d));
                if self.by_id.get(at) == Some(&d) {
                    self.by_id.remove(at);
                }
                self.ranks_stale = true;
            }
            _ => {}
        }
        old.map(|r| r.data)
    }

    fn by_id_position(&self, id: &str) -> usize {
        self.by_id.partition_point(|x| self.dev_ids.name(*x) < id)
    }

    /// Takes `old`'s device out of its org and owner lists, fixing the positions of the device moved.
    fn unlink_device(&mut self, old: &DevRec) {
        if let Some(list) = vec_at(&mut self.org_devices, old.data.org) {
            if let Some(moved) = swap_out(list, old.pos_org) {
                if let Some(Some(rec)) = self.devices.get_mut(moved as usize) {
                    rec.pos_org = old.pos_org;
                }
            }
        }
        if let Some(owner) = old.data.owner {
            if let Some(list) = vec_at(&mut self.owned, owner) {
                if let Some(moved) = swap_out(list, old.pos_owner) {
                    if let Some(Some(rec)) = self.devices.get_mut(moved as usize) {
                        rec.pos_owner = old.pos_owner;
                    }
                }
            }
        }
    }

    /// Ends bulk loading: sorts the id-ordered device list once.
    pub(crate) fn finish_bulk(&mut self) {
        if self.bulk {
            self.bulk = false;
            let mut by_id: Vec<u32> = (0..self.devices.len() as u32).filter(|d| self.device(*d).is_some()).collect();
            self.dev_ids.sort(&mut by_id);
            self.by_id = by_id;
            self.rerank();
            for o in 0..self.org_devices.len() as u32 {
                self.sort_org_devices(o);
            }
        }
    }

    /// Puts the device list of org `o` back in id order (by rank: ranks must be current) and
    /// fixes the devices' positions in it.
    fn sort_org_devices(&mut self, o: u32) {
        let Some(list) = self.org_devices.get_mut(o as usize) else { return };
        let rank = &self.rank;
        let rank_of = |d: u32| rank.get(d as usize).copied().unwrap_or(NONE);
        if list.windows(2).all(|w| matches!(w, [a, b] if rank_of(*a) < rank_of(*b))) {
            return;
        }
        sort_slots(list, &|a, b| rank_of(a).cmp(&rank_of(b)));
        for (i, &d) in list.iter().enumerate() {
            if let Some(Some(rec)) = self.devices.get_mut(d as usize) {
                rec.pos_org = i as u32;
            }
        }
    }

    /// Recomputes `rank` from `by_id` (O(devices); after a batch that added or removed one).
    fn rerank(&mut self) {
        self.rank.clear();
        self.rank.resize(self.devices.len(), NONE);
        for (r, &d) in self.by_id.iter().enumerate() {
            if let Some(slot) = self.rank.get_mut(d as usize) {
                *slot = r as u32;
            }
        }
        self.ranks_stale = false;
    }

    /// Reverts one recorded change.
    pub(crate) fn undo(&mut self, step: Undo) {
        match step {
            Undo::Org(o, rec) => {
                self.set_org(o, rec);
            }
            Undo::User(u, rec) => {
                self.set_user(u, rec);
            }
            Undo::Membership(u, o, role) => {
                self.set_membership(u, o, role);
            }
            Undo::Device(d, data) => {
                self.set_device(d, data);
            }
        }
    }

    pub(crate) fn marks(&self) -> Marks {
        Marks { orgs: self.org_ids.len(), users: self.user_ids.len(), devices: self.dev_ids.len() }
    }

    /// Forgets ids first seen after `m` (their slots are vacant again after an undo).
    pub(crate) fn truncate_to(&mut self, m: Marks) {
        self.org_ids.truncate(m.orgs);
        self.orgs.truncate(m.orgs);
        self.derived.truncate(m.orgs);
        self.children.truncate(m.orgs);
        self.org_devices.truncate(m.orgs);
        self.org_members.truncate(m.orgs);
        self.user_ids.truncate(m.users);
        self.users.truncate(m.users);
        self.user_mems.truncate(m.users);
        self.owned.truncate(m.users);
        self.dev_ids.truncate(m.devices);
        self.devices.truncate(m.devices);
        self.places.truncate(m.devices);
        self.rank.truncate(m.devices);
    }

    // ---- derived data and validation ---------------------------------------------------------

    /// Rebuilds the forest: children, pre/post intervals, depth, effective suspension, roots.
    /// Fails on a dangling parent, a cycle or a depth above 5.
    pub(crate) fn recompute_orgs(&mut self) -> Result<()> {
        let n = self.orgs.len();
        for c in &mut self.children {
            c.clear();
        }
        let mut roots = Vec::new();
        for o in 0..n as u32 {
            let Some(rec) = self.org(o) else { continue };
            match rec.parent {
                None => roots.push(o),
                Some(p) => {
                    if !self.org_present(p) {
                        return Err(Error::new(
                            ErrorCode::UnknownReference,
                            format!("unknown parent org `{}` of org `{}`", self.org_name(p), self.org_name(o)),
                        ));
                    }
                    if let Some(c) = vec_at(&mut self.children, p) {
                        c.push(o);
                    }
                }
            }
        }
        self.preorder.clear();
        let mut too_deep: Option<u32> = None;
        // Iterative DFS: (org, depth, parent's effective suspension, root, next child index).
        let mut stack: Vec<(u32, u8, bool, u32, usize)> = Vec::new();
        for r in roots {
            stack.push((r, 1, false, r, 0));
            self.enter(r, 1, false, r);
            while let Some(top) = stack.last_mut() {
                let (o, depth, _, root, next) = *top;
                let child = self.children.get(o as usize).and_then(|c| c.get(next)).copied();
                match child {
                    Some(c) => {
                        top.4 += 1;
                        let eff = self.der(o).eff_suspended;
                        let cd = depth.saturating_add(1);
                        if cd > MAX_DEPTH && too_deep.is_none() {
                            too_deep = Some(c);
                        }
                        self.enter(c, cd, eff, root);
                        stack.push((c, cd, eff, root, 0));
                    }
                    None => {
                        let post = self.preorder.len().saturating_sub(1) as u32;
                        if let Some(d) = self.derived.get_mut(o as usize) {
                            d.post = post;
                        }
                        stack.pop();
                    }
                }
            }
        }
        if self.preorder.len() < self.org_count {
            let mut seen = vec![false; n];
            for o in &self.preorder {
                if let Some(s) = seen.get_mut(*o as usize) {
                    *s = true;
                }
            }
            let culprit = (0..n as u32)
                .filter(|o| self.org_present(*o) && !seen.get(*o as usize).copied().unwrap_or(true))
                .min_by(|a, b| self.org_name(*a).cmp(self.org_name(*b)));
            return Err(Error::new(
                ErrorCode::OrgCycle,
                format!("org `{}` is in a parent cycle", culprit.map_or("", |o| self.org_name(o))),
            ));
        }
        if let Some(o) = too_deep {
            return Err(Error::new(
                ErrorCode::DepthExceeded,
                format!("org `{}` is deeper than {MAX_DEPTH} levels", self.org_name(o)),
            ));
        }
        Ok(())
    }

    fn enter(&mut self, o: u32, depth: u8, parent_eff: bool, root: u32) {
        let pre = self.preorder.len() as u32;
        self.preorder.push(o);
        let suspended = self.org(o).is_some_and(|r| r.suspended);
        if let Some(d) = self.derived.get_mut(o as usize) {
            *d = OrgDerived { pre, post: pre, depth, eff_suspended: parent_eff || suspended, root };
        }
    }

    /// Resolves the permissions of the membership of `u` in `o`; checks its references and role.
    fn refresh_membership(&mut self, u: u32, o: u32) -> Result<()> {
        let Some(role) = self.mem(u, o).map(|m| m.role.clone()) else { return Ok(()) };
        if self.user(u).is_none() {
            return Err(Error::new(
                ErrorCode::UnknownReference,
                format!("unknown user `{}` in membership of org `{}`", self.user_name(u), self.org_name(o)),
            ));
        }
        if !self.org_present(o) {
            return Err(Error::new(
                ErrorCode::UnknownReference,
                format!("unknown org `{}` in membership of user `{}`", self.org_name(o), self.user_name(u)),
            ));
        }
        let perms = self.role_perms(o, role.as_str()).ok_or_else(|| {
            Error::new(
                ErrorCode::UnknownRole,
                format!("role `{role}` of user `{}` is not defined in org `{}`", self.user_name(u), self.org_name(o)),
            )
        })?;
        if let Some(m) = self.user_mems.get_mut(u as usize).and_then(|ms| ms.iter_mut().find(|m| m.org == o)) {
            m.perms = perms;
        }
        Ok(())
    }

    fn check_device(&self, d: u32) -> Result<()> {
        let Some(dev) = self.device(d) else { return Ok(()) };
        if !self.org_present(dev.org) {
            return Err(Error::new(
                ErrorCode::UnknownReference,
                format!("unknown org `{}` in device `{}`", self.org_name(dev.org), self.device_name(d)),
            ));
        }
        if let Some(owner) = dev.owner {
            if self.user(owner).is_none() {
                return Err(Error::new(
                    ErrorCode::UnknownReference,
                    format!("unknown owner `{}` of device `{}`", self.user_name(owner), self.device_name(d)),
                ));
            }
            if self.mem(owner, dev.org).is_none() {
                return Err(Error::new(
                    ErrorCode::OwnerNotMember,
                    format!(
                        "owner `{}` of device `{}` is not a member of org `{}`",
                        self.user_name(owner),
                        self.device_name(d),
                        self.org_name(dev.org)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Brings derived data up to date after a batch of changes and checks invariants I1–I3 on
    /// what the batch touched (everything when `t.all`).
    pub(crate) fn settle(&mut self, t: &Touched) -> Result<()> {
        if self.ranks_stale {
            self.rerank();
        }
        let mut unsorted = std::mem::take(&mut self.unsorted_orgs);
        sort_slots(&mut unsorted, &|a, b| a.cmp(&b));
        unsorted.dedup();
        for &o in &unsorted {
            self.sort_org_devices(o);
        }
        if t.all || t.orgs_changed {
            self.recompute_orgs()?;
        }
        for &o in &t.orgs_removed {
            if self.org_present(o) {
                continue;
            }
            if let Some(&d) = self.devices_of_org(o).first() {
                return Err(Error::new(
                    ErrorCode::UnknownReference,
                    format!("org `{}` still has device `{}`", self.org_name(o), self.device_name(d)),
                ));
            }
            if let Some(&u) = self.members_of_org(o).first() {
                return Err(Error::new(
                    ErrorCode::UnknownReference,
                    format!("org `{}` still has member `{}`", self.org_name(o), self.user_name(u)),
                ));
            }
        }
        for &u in &t.users_removed {
            if self.user(u).is_some() {
                continue;
            }
            if let Some(m) = self.mems(u).first() {
                return Err(Error::new(
                    ErrorCode::UnknownReference,
                    format!("user `{}` still has a membership in org `{}`", self.user_name(u), self.org_name(m.org)),
                ));
            }
            if let Some(&d) = self.owned_by(u).first() {
                return Err(Error::new(
                    ErrorCode::UnknownReference,
                    format!("user `{}` still owns device `{}`", self.user_name(u), self.device_name(d)),
                ));
            }
        }
        if t.all || t.orgs_changed {
            for u in 0..self.user_mems.len() as u32 {
                let orgs: Vec<u32> = self.mems(u).iter().map(|m| m.org).collect();
                for o in orgs {
                    self.refresh_membership(u, o)?;
                }
            }
        } else {
            for &(u, o) in &t.memberships {
                self.refresh_membership(u, o)?;
            }
        }
        // Memberships that ended must not leave an owned device behind in that org.
        for &(u, o) in &t.memberships {
            if self.mem(u, o).is_none() {
                for &d in self.owned_by(u) {
                    if self.device(d).is_some_and(|dev| dev.org == o) {
                        return Err(Error::new(
                            ErrorCode::OwnerNotMember,
                            format!(
                                "owner `{}` of device `{}` is not a member of org `{}`",
                                self.user_name(u),
                                self.device_name(d),
                                self.org_name(o)
                            ),
                        ));
                    }
                }
            }
        }
        if t.all {
            for d in 0..self.devices.len() as u32 {
                self.check_device(d)?;
            }
        } else {
            for &d in &t.devices {
                self.check_device(d)?;
            }
        }
        Ok(())
    }
}
