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
use std::sync::OnceLock;

use crate::model::{builtin_role, Perms, Status, ADMIN_ROLE, MAX_DEPTH};

mod change;
mod intern;
mod records;
mod validate;

pub(crate) use change::{Marks, Undo};
pub(crate) use intern::Interner;
pub(crate) use records::{DevRec, DeviceData, Mem, OrgDerived, OrgRec, Place, RoleTable, UserCheck, UserRec};
pub(crate) use validate::Touched;

/// Marks "no slot" in raw `u32` slot numbers (and "no rank").
pub(crate) const NONE: u32 = u32::MAX;

/// A dense slot number of one kind of entity. Each kind has its own type, so that a user slot
/// can never be passed where an org slot is meant (`mem(o, u)` does not compile).
pub(crate) trait Slot: Copy + Eq + Ord {
    /// The slot with this raw number.
    fn from_raw(raw: u32) -> Self;
    /// Its raw number (what crosses the wasm boundary).
    fn raw(self) -> u32;
    /// Its index into the per-slot vectors.
    #[inline(always)]
    fn index(self) -> usize {
        self.raw() as usize
    }
}

macro_rules! slot_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub(crate) struct $name(u32);

        impl Slot for $name {
            #[inline(always)]
            fn from_raw(raw: u32) -> Self {
                Self(raw)
            }
            #[inline(always)]
            fn raw(self) -> u32 {
                self.0
            }
        }

    };
}

slot_type!(
    /// The slot of an org id.
    OrgSlot
);
slot_type!(
    /// The slot of a user id.
    UserSlot
);
slot_type!(
    /// The slot of a device id.
    DeviceSlot
);

impl OrgSlot {
    /// No org (the org of a vacant device slot).
    pub(crate) const NONE: Self = Self(NONE);
}

impl UserSlot {
    /// No user (the owner of an unowned device).
    pub(crate) const NONE: Self = Self(NONE);
}

/// Ranks (positions in id order) sort as themselves.
impl Slot for u32 {
    #[inline(always)]
    fn from_raw(raw: u32) -> Self {
        raw
    }
    #[inline(always)]
    fn raw(self) -> u32 {
        self
    }
}

/// The element of `v` for slot `s`, mutably.
fn vec_at<T, S: Slot>(v: &mut [T], s: S) -> Option<&mut T> {
    v.get_mut(s.index())
}

/// Sorts slots with `cmp`. Every sort in the crate goes through one non-generic function with
/// `dyn` comparators and accessors, so the sort code (and the copying around it) exists once:
/// each instantiation of the standard sorts adds about 5 KB to the `.wasm`. The typed slots are
/// sorted as raw numbers (a copy: converting the slice in place would need `unsafe`).
pub(crate) fn sort_slots<S: Slot>(v: &mut [S], cmp: &dyn Fn(S, S) -> Ordering) {
    sort_dyn(&mut Singles(v), &|a, b| cmp(S::from_raw(a.0), S::from_raw(b.0)));
}

/// Sorts slot pairs with `cmp` (see [`sort_slots`]).
pub(crate) fn sort_pairs<A: Slot, B: Slot>(v: &mut [(A, B)], cmp: &dyn Fn((A, B), (A, B)) -> Ordering) {
    sort_dyn(&mut Pairs(v), &|x, y| cmp((A::from_raw(x.0), B::from_raw(x.1)), (A::from_raw(y.0), B::from_raw(y.1))));
}

/// A slice of slots or slot pairs, read and written as raw `(u32, u32)` pairs.
trait RawList {
    fn raw_len(&self) -> usize;
    fn read(&self, i: usize) -> (u32, u32);
    fn write(&mut self, i: usize, raw: (u32, u32));
}

struct Singles<'a, S>(&'a mut [S]);
struct Pairs<'a, A, B>(&'a mut [(A, B)]);

impl<S: Slot> RawList for Singles<'_, S> {
    fn raw_len(&self) -> usize {
        self.0.len()
    }
    fn read(&self, i: usize) -> (u32, u32) {
        (self.0.get(i).map_or(NONE, |s| s.raw()), 0)
    }
    fn write(&mut self, i: usize, raw: (u32, u32)) {
        if let Some(s) = self.0.get_mut(i) {
            *s = S::from_raw(raw.0);
        }
    }
}

impl<A: Slot, B: Slot> RawList for Pairs<'_, A, B> {
    fn raw_len(&self) -> usize {
        self.0.len()
    }
    fn read(&self, i: usize) -> (u32, u32) {
        self.0.get(i).map_or((NONE, NONE), |(a, b)| (a.raw(), b.raw()))
    }
    fn write(&mut self, i: usize, raw: (u32, u32)) {
        if let Some(s) = self.0.get_mut(i) {
            *s = (A::from_raw(raw.0), B::from_raw(raw.1));
        }
    }
}

#[inline(never)]
fn sort_dyn(v: &mut dyn RawList, cmp: &dyn Fn((u32, u32), (u32, u32)) -> Ordering) {
    let mut raw: Vec<(u32, u32)> = (0..v.raw_len()).map(|i| v.read(i)).collect();
    raw.sort_unstable_by(|a, b| cmp(*a, *b));
    for (i, r) in raw.into_iter().enumerate() {
        v.write(i, r);
    }
}

/// The indexed state.
// INVARIANT: every per-org vector (`orgs`, `derived`, `children`, `org_devices`,
// `org_members`) has one entry per interned org slot, every per-user vector (`users`,
// `user_mems`, `checks`, `owned`) one per user slot, every per-device vector (`devices`, `places`)
// one per device slot (`ensure_*_slot` grow them, `truncate_to` shrinks them with the
// interners). A vacant slot's entry is `None` / empty.
// INVARIANT: the four counts equal the numbers of present orgs, users, devices and memberships.
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    pub org_ids: Interner<OrgSlot>,
    pub orgs: Vec<Option<OrgRec>>,
    /// Derived from the forest by `recompute_orgs`.
    // INVARIANT: after `settle`, `derived[o]` is current for every present org (intervals,
    // depth, effective suspension, root), and so are `children` and `preorder`.
    pub derived: Vec<OrgDerived>,
    pub children: Vec<Vec<OrgSlot>>,
    /// The devices of each org, in ascending id order.
    // INVARIANT: outside bulk loading every list is in ascending id order at all times
    // (`set_device` inserts and removes by binary search); `finish_bulk` sorts them once.
    pub org_devices: Vec<Vec<DeviceSlot>>,
    /// The members of each org.
    // INVARIANT: `u ∈ org_members[o]` exactly when `mem(u, o)` exists (`set_membership`).
    pub org_members: Vec<Vec<UserSlot>>,
    /// Present orgs in pre-order: the subtree of `o` is `preorder[pre(o)..=post(o)]`.
    pub preorder: Vec<OrgSlot>,

    pub user_ids: Interner<UserSlot>,
    pub users: Vec<Option<UserRec>>,
    /// The memberships of each user, at most one per org.
    // INVARIANT: after `settle`, each `Mem::perms` is the closed permission set of its role in
    // its org (`role_perms`), and every role is defined there (I3).
    pub user_mems: Vec<Vec<Mem>>,
    /// What a device check reads of each user.
    // INVARIANT (the user-check cache): `checks[u] == UserCheck::of(user(u) is active, mems(u))`,
    // kept by the only writers of a user's status and memberships: `set_user`,
    // `set_membership` and `refresh_membership` (which sets a membership's permissions).
    pub checks: Vec<UserCheck>,
    /// The devices each user owns.
    // INVARIANT: `d ∈ owned[u]` exactly when `device(d).owner == Some(u)`, at position
    // `devices[d].pos_owner` (`set_device` and `unlink_device` keep the positions).
    pub owned: Vec<Vec<DeviceSlot>>,

    pub dev_ids: Interner<DeviceSlot>,
    pub devices: Vec<Option<DevRec>>,
    /// The org and owner of each device slot: what a check needs, 8 bytes a device, so that a
    /// check reads them without the device record.
    // INVARIANT (the device-org cache): `places[d] == Place::of(device(d))` — the device's org
    // and owner (`NONE` for none) for a present device, both `NONE` for a vacant slot — kept by
    // `set_device`, the only writer of `devices`.
    pub places: Vec<Place>,
    /// Present device slots in ascending id order.
    pub by_id: Vec<DeviceSlot>,
    /// The position of each device slot in `by_id` (its rank in id order), `NONE` when absent:
    /// computed on first use after devices came or went (`ranks`), so that a command adding a
    /// device early in id order costs no re-ranking until something lists devices.
    // INVARIANT: when set to a table, `ranks[d]` is the position of `d` in `by_id` for every
    // present device and `NONE` for every other slot below its length; when set to `None`, every
    // slot is present and `by_id[r] == r`, so each slot is its own rank. Every change to `by_id`
    // (and `truncate_to`) clears it.
    ranks: OnceLock<Option<Vec<u32>>>,
    /// While loading, `by_id` is built once at the end.
    bulk: bool,

    pub org_count: usize,
    pub user_count: usize,
    pub device_count: usize,
    pub membership_count: usize,
}

/// Device ranks in id order (`Index::ranks`).
#[derive(Clone, Copy)]
pub(crate) struct Ranks<'a> {
    /// The rank of each slot (`NONE` for a vacant one); `None` when each slot is its own rank.
    table: Option<&'a [u32]>,
    by_id: &'a [DeviceSlot],
}

impl Ranks<'_> {
    /// The rank of device slot `d`; `NONE` (or a rank past the end) for a vacant slot.
    #[inline(always)]
    pub(crate) fn of(self, d: DeviceSlot) -> u32 {
        match self.table {
            None => d.raw(),
            Some(t) => t.get(d.index()).copied().unwrap_or(NONE),
        }
    }

    /// The device of rank `r`.
    #[inline(always)]
    pub(crate) fn at(self, r: usize) -> Option<DeviceSlot> {
        match self.table {
            None => (r < self.by_id.len()).then(|| DeviceSlot::from_raw(r as u32)),
            Some(_) => self.by_id.get(r).copied(),
        }
    }
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

    /// Every org slot (present or vacant).
    pub(crate) fn org_slots(&self) -> impl Iterator<Item = OrgSlot> {
        (0..self.orgs.len() as u32).map(OrgSlot::from_raw)
    }

    /// Every user slot (present or vacant).
    pub(crate) fn user_slots(&self) -> impl Iterator<Item = UserSlot> {
        (0..self.users.len() as u32).map(UserSlot::from_raw)
    }

    /// Every device slot (present or vacant).
    pub(crate) fn device_slots(&self) -> impl Iterator<Item = DeviceSlot> {
        (0..self.devices.len() as u32).map(DeviceSlot::from_raw)
    }

    #[inline(always)]
    pub(crate) fn org(&self, o: OrgSlot) -> Option<&OrgRec> {
        self.orgs.get(o.index())?.as_ref()
    }

    #[inline(always)]
    pub(crate) fn der(&self, o: OrgSlot) -> OrgDerived {
        self.derived.get(o.index()).copied().unwrap_or_default()
    }

    #[inline(always)]
    pub(crate) fn user(&self, u: UserSlot) -> Option<&UserRec> {
        self.users.get(u.index())?.as_ref()
    }

    /// Whether user slot `u` holds a present, active user: every check denies any other.
    #[inline(always)]
    pub(crate) fn is_active(&self, u: UserSlot) -> bool {
        self.user(u).is_some_and(|r| r.status == Status::Active)
    }

    #[inline(always)]
    pub(crate) fn mems(&self, u: UserSlot) -> &[Mem] {
        self.user_mems.get(u.index()).map_or(&[], Vec::as_slice)
    }

    #[inline(always)]
    pub(crate) fn user_check(&self, u: UserSlot) -> UserCheck {
        self.checks.get(u.index()).copied().unwrap_or_default()
    }

    /// Recomputes the check record of user slot `u` (see `checks`).
    pub(super) fn refresh_check(&mut self, u: UserSlot) {
        let active = self.is_active(u);
        let c = UserCheck::of(active, self.mems(u));
        if let Some(slot) = self.checks.get_mut(u.index()) {
            *slot = c;
        }
    }

    pub(crate) fn mem(&self, u: UserSlot, o: OrgSlot) -> Option<&Mem> {
        self.mems(u).iter().find(|m| m.org == o)
    }

    /// The org and owner of device slot `d` (`NONE`s when the device is absent).
    #[inline(always)]
    pub(crate) fn place(&self, d: DeviceSlot) -> Place {
        self.places.get(d.index()).copied().unwrap_or(Place::VACANT)
    }

    /// The org of device slot `d`, `OrgSlot::NONE` when the device is absent.
    #[inline(always)]
    pub(crate) fn device_org(&self, d: DeviceSlot) -> OrgSlot {
        self.place(d).org
    }

    /// The rank in id order of each device slot: computed here on first use after a change.
    /// A snapshot lists devices in id order, so until devices come or go out of order a slot is
    /// its own rank and no table is read.
    pub(crate) fn ranks(&self) -> Ranks<'_> {
        let table = self.ranks.get_or_init(|| {
            let in_order =
                self.by_id.len() == self.devices.len() && self.by_id.iter().enumerate().all(|(r, d)| d.index() == r);
            if in_order {
                return None;
            }
            let mut rank = vec![NONE; self.devices.len()];
            for (r, &d) in self.by_id.iter().enumerate() {
                if let Some(slot) = rank.get_mut(d.index()) {
                    *slot = r as u32;
                }
            }
            Some(rank)
        });
        Ranks { table: table.as_deref(), by_id: &self.by_id }
    }

    /// Forgets the ranks (`by_id` changed).
    pub(super) fn clear_ranks(&mut self) {
        self.ranks.take();
    }

    #[inline(always)]
    pub(crate) fn device(&self, d: DeviceSlot) -> Option<&DeviceData> {
        self.devices.get(d.index())?.as_ref().map(|r| &r.data)
    }

    pub(crate) fn devices_of_org(&self, o: OrgSlot) -> &[DeviceSlot] {
        self.org_devices.get(o.index()).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn members_of_org(&self, o: OrgSlot) -> &[UserSlot] {
        self.org_members.get(o.index()).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn owned_by(&self, u: UserSlot) -> &[DeviceSlot] {
        self.owned.get(u.index()).map_or(&[], Vec::as_slice)
    }

    /// The present orgs of the subtree of `o` (itself first), in pre-order.
    pub(crate) fn subtree(&self, o: OrgSlot) -> &[OrgSlot] {
        let d = self.der(o);
        self.preorder.get(d.pre as usize..=d.post as usize).unwrap_or(&[])
    }

    /// Whether `a` is `anc` or one of its descendants. O(1).
    #[inline(always)]
    pub(crate) fn in_subtree(&self, a: OrgSlot, anc: OrgSlot) -> bool {
        let (da, dn) = (self.der(a), self.der(anc));
        dn.pre <= da.pre && da.pre <= dn.post
    }

    /// Whether `a` is a strict descendant of `anc`. O(1).
    #[inline(always)]
    pub(crate) fn strictly_below(&self, a: OrgSlot, anc: OrgSlot) -> bool {
        a != anc && self.in_subtree(a, anc)
    }

    /// Orders (user, org) pairs by user id, then org id.
    pub(crate) fn membership_cmp(&self, a: (UserSlot, OrgSlot), b: (UserSlot, OrgSlot)) -> Ordering {
        self.user_ids.cmp(a.0, b.0).then_with(|| self.org_ids.cmp(a.1, b.1))
    }

    pub(crate) fn org_present(&self, o: OrgSlot) -> bool {
        self.org(o).is_some()
    }

    pub(crate) fn org_name(&self, o: OrgSlot) -> &str {
        self.org_ids.name(o)
    }

    pub(crate) fn user_name(&self, u: UserSlot) -> &str {
        self.user_ids.name(u)
    }

    pub(crate) fn device_name(&self, d: DeviceSlot) -> &str {
        self.dev_ids.name(d)
    }

    /// The closed permissions of role `role` in org `o`, or `None` when it is undefined there.
    pub(crate) fn role_perms(&self, o: OrgSlot, role: &str) -> Option<Perms> {
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
