//! The compiled, indexed form the engine queries: interned ids, org pre/post-order intervals,
//! per-org device and member lists, per-user memberships and owned devices, devices in id order.
//!
//! Every entity lives in a slot named by its interned id. A slot may be vacant (the id is
//! referenced but the entity is absent): that is how a delta can be applied op by op in
//! place, validated as a whole, and undone exactly when it fails.
//!
//! One job per file: `intern` (ids ↔ slots), `records` (what is stored per entity), `change`
//! (the primitive changes, each returning what undoes it), `validate` (derived data and the
//! invariants I1–I3, checked on what a batch touched); this file holds the index and its
//! lookups.

use std::cmp::Ordering;

use crate::model::{builtin_role, Perms, ADMIN_ROLE, MAX_DEPTH};

mod change;
mod intern;
mod records;
mod validate;

pub(crate) use change::{Marks, Undo};
pub(crate) use intern::Interner;
pub(crate) use records::{DevRec, DeviceData, Mem, OrgDerived, OrgRec, Place, RoleTable, UserRec};
pub(crate) use validate::Touched;

/// Marks "no slot" in `u32` slot fields.
pub(crate) const NONE: u32 = u32::MAX;

/// The element `i` of `v`, mutably.
fn vec_at<T>(v: &mut [T], i: u32) -> Option<&mut T> {
    v.get_mut(i as usize)
}

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
}
