//! The primitive changes to the index: each is infallible, keeps the index's lists and caches
//! in step, and returns what it replaced, so that a batch can be undone exactly. Validation is
//! `validate`'s job, run once per batch by `settle`.

use super::{
    sort_slots, vec_at, DevRec, DeviceData, DeviceSlot, Index, Mem, OrgDerived, OrgRec, OrgSlot, Place, Slot, UserRec,
    UserSlot, NONE,
};
use crate::model::Perms;
use crate::snapshot::RoleName;

/// One step to undo, recorded by each primitive change.
#[derive(Debug, Clone)]
pub(crate) enum Undo {
    Org(OrgSlot, Option<OrgRec>),
    User(UserSlot, Option<UserRec>),
    Membership(UserSlot, OrgSlot, Option<RoleName>),
    Device(DeviceSlot, Option<DeviceData>),
}

/// Interner lengths, to forget ids first seen by a failed batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marks {
    orgs: usize,
    users: usize,
    devices: usize,
}

/// Removes `pos` from `list` by swapping in the last element; returns the element moved into `pos`.
fn swap_out<S: Slot>(list: &mut Vec<S>, pos: u32) -> Option<S> {
    let pos = pos as usize;
    if pos >= list.len() {
        return None;
    }
    list.swap_remove(pos);
    list.get(pos).copied()
}

impl Index {
    fn ensure_org_slot(&mut self, o: OrgSlot) {
        let n = o.index() + 1;
        if self.orgs.len() < n {
            self.orgs.resize(n, None);
            self.derived.resize(n, OrgDerived::default());
            self.children.resize(n, Vec::new());
            self.org_devices.resize(n, Vec::new());
            self.org_members.resize(n, Vec::new());
        }
    }

    fn ensure_user_slot(&mut self, u: UserSlot) {
        let n = u.index() + 1;
        if self.users.len() < n {
            self.users.resize(n, None);
            self.user_mems.resize(n, Vec::new());
            self.checks.resize(n, super::UserCheck::default());
            self.owned.resize(n, Vec::new());
        }
    }

    fn ensure_device_slot(&mut self, d: DeviceSlot) {
        let n = d.index() + 1;
        if self.devices.len() < n {
            self.devices.resize(n, None);
            self.places.resize(n, Place::VACANT);
        }
    }

    pub(crate) fn intern_org(&mut self, id: &str) -> OrgSlot {
        let o = self.org_ids.intern(id);
        self.ensure_org_slot(o);
        o
    }

    pub(crate) fn intern_user(&mut self, id: &str) -> UserSlot {
        let u = self.user_ids.intern(id);
        self.ensure_user_slot(u);
        u
    }

    pub(crate) fn intern_device(&mut self, id: &str) -> DeviceSlot {
        let d = self.dev_ids.intern(id);
        self.ensure_device_slot(d);
        d
    }

    pub(crate) fn set_org(&mut self, o: OrgSlot, rec: Option<OrgRec>) -> Option<OrgRec> {
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

    pub(crate) fn set_user(&mut self, u: UserSlot, rec: Option<UserRec>) -> Option<UserRec> {
        self.ensure_user_slot(u);
        let slot = vec_at(&mut self.users, u)?;
        let old = std::mem::replace(slot, rec);
        match (&old, slot.is_some()) {
            (None, true) => self.user_count += 1,
            (Some(_), false) => self.user_count -= 1,
            _ => {}
        }
        self.refresh_check(u);
        old
    }

    /// Sets or removes the membership of `u` in `o`; returns the previous role.
    pub(crate) fn set_membership(&mut self, u: UserSlot, o: OrgSlot, role: Option<RoleName>) -> Option<RoleName> {
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
        self.refresh_check(u);
        old
    }

    /// Sets or removes device `d`; returns its previous facts.
    pub(crate) fn set_device(&mut self, d: DeviceSlot, data: Option<DeviceData>) -> Option<DeviceData> {
        self.ensure_device_slot(d);
        let old = self.devices.get_mut(d.index()).and_then(Option::take);
        if let Some(old) = &old {
            self.unlink_device(d, old);
        }
        let present_now = data.is_some();
        if let Some(data) = data {
            self.ensure_org_slot(data.org);
            self.link_org_device(d, data.org);
            let mut pos_owner = NONE;
            if let Some(owner) = data.owner {
                self.ensure_user_slot(owner);
                if let Some(list) = vec_at(&mut self.owned, owner) {
                    pos_owner = list.len() as u32;
                    list.push(d);
                }
            }
            if let Some(slot) = vec_at(&mut self.devices, d) {
                *slot = Some(DevRec { data, pos_owner });
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
                    self.clear_ranks();
                }
            }
            (true, false) => {
                self.device_count -= 1;
                let at = self.by_id_position(self.dev_ids.name(d));
                if self.by_id.get(at) == Some(&d) {
                    self.by_id.remove(at);
                }
                self.clear_ranks();
            }
            _ => {}
        }
        old.map(|r| r.data)
    }

    fn by_id_position(&self, id: &str) -> usize {
        self.by_id.partition_point(|x| self.dev_ids.name(*x) < id)
    }

    /// Where device `d` is, or goes, in the id-ordered device list of org `o`.
    fn org_list_position(&self, o: OrgSlot, d: DeviceSlot) -> usize {
        let id = self.dev_ids.name(d);
        self.devices_of_org(o).partition_point(|x| self.dev_ids.name(*x) < id)
    }

    /// Puts device `d` into the device list of org `o`: in id order, or at the end while loading
    /// (`finish_bulk` sorts the lists once).
    fn link_org_device(&mut self, d: DeviceSlot, o: OrgSlot) {
        let at = if self.bulk { usize::MAX } else { self.org_list_position(o, d) };
        if let Some(list) = vec_at(&mut self.org_devices, o) {
            list.insert(at.min(list.len()), d);
        }
    }

    /// Takes device `d` (stored as `old`) out of its org and owner lists, fixing the owner-list
    /// position of the device moved.
    fn unlink_device(&mut self, d: DeviceSlot, old: &DevRec) {
        let at = if self.bulk { None } else { Some(self.org_list_position(old.data.org, d)) };
        if let Some(list) = vec_at(&mut self.org_devices, old.data.org) {
            if let Some(i) = at.filter(|&i| list.get(i) == Some(&d)).or_else(|| list.iter().position(|x| *x == d)) {
                list.remove(i);
            }
        }
        if let Some(owner) = old.data.owner {
            if let Some(list) = vec_at(&mut self.owned, owner) {
                if let Some(moved) = swap_out(list, old.pos_owner) {
                    if let Some(Some(rec)) = self.devices.get_mut(moved.index()) {
                        rec.pos_owner = old.pos_owner;
                    }
                }
            }
        }
    }

    /// Ends bulk loading: sorts the id-ordered device list once, ranks it, and puts every org's
    /// device list in id order by those ranks.
    pub(crate) fn finish_bulk(&mut self) {
        if self.bulk {
            self.bulk = false;
            let mut by_id: Vec<DeviceSlot> = self.device_slots().filter(|d| self.device(*d).is_some()).collect();
            self.dev_ids.sort(&mut by_id);
            self.by_id = by_id;
            self.clear_ranks();
            let mut lists = std::mem::take(&mut self.org_devices);
            let rank = self.ranks();
            for list in &mut lists {
                sort_slots(list, &|a, b| rank.of(a).cmp(&rank.of(b)));
            }
            self.org_devices = lists;
        }
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
        self.checks.truncate(m.users);
        self.owned.truncate(m.users);
        self.dev_ids.truncate(m.devices);
        self.devices.truncate(m.devices);
        self.places.truncate(m.devices);
        self.clear_ranks();
    }
}
