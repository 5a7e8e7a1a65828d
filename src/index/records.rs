//! What the index stores per entity: org, user, membership and device records, and what is
//! derived from the org forest.

use std::collections::BTreeMap;

use super::{OrgSlot, UserSlot};
use crate::model::{Perms, Plan, Status};
use crate::snapshot::RoleName;

/// A role table entry: the closed permission set a role has in an org.
pub(crate) type RoleTable = BTreeMap<RoleName, Perms>;

/// An org as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrgRec {
    pub name: String,
    pub parent: Option<OrgSlot>,
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
    pub root: OrgSlot,
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
    pub org: OrgSlot,
    pub role: RoleName,
    /// The closed permissions of `role` in `org` (kept current by `settle`).
    pub perms: Perms,
}

/// The stored facts of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceData {
    pub name: String,
    pub org: OrgSlot,
    pub owner: Option<UserSlot>,
}

/// What a device check reads of a user, in one place (20 bytes a user): whether the user is
/// active and, for a user with at most [`UserCheck::INLINE`] memberships (nearly all), each
/// membership's org and closed permissions. One cache line where the records are three (the
/// user record, the membership list's header, the list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct UserCheck {
    pub active: bool,
    /// More memberships than fit: read the user's membership list instead.
    pub overflow: bool,
    pub len: u8,
    pub mems: [(OrgSlot, Perms); UserCheck::INLINE],
}

impl UserCheck {
    pub const INLINE: usize = 2;

    /// The check record of a user with `active` status and memberships `mems`.
    pub fn of(active: bool, mems: &[Mem]) -> UserCheck {
        let mut c = UserCheck { active, overflow: mems.len() > Self::INLINE, ..UserCheck::default() };
        if !c.overflow {
            for (slot, m) in c.mems.iter_mut().zip(mems) {
                *slot = (m.org, m.perms);
            }
            c.len = mems.len() as u8;
        }
        c
    }

    /// The inline memberships (empty when `overflow`).
    pub fn inline(&self) -> &[(OrgSlot, Perms)] {
        self.mems.get(..self.len as usize).unwrap_or(&[])
    }
}

/// Where a device is: its org and owner slots (`UserSlot::NONE` for no owner; both `NONE`
/// while absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub org: OrgSlot,
    pub owner: UserSlot,
}

impl Place {
    /// The place of a vacant device slot.
    pub const VACANT: Place = Place { org: OrgSlot::NONE, owner: UserSlot::NONE };

    /// The place of a device (vacant for `None`).
    pub fn of(device: Option<&DeviceData>) -> Place {
        device.map_or(Self::VACANT, |d| Place { org: d.org, owner: d.owner.unwrap_or(UserSlot::NONE) })
    }
}

/// A device as stored, with its position in its owner's list (its org's list is in id order,
/// so it is found there by binary search).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DevRec {
    pub data: DeviceData,
    /// Its position in its owner's list of owned devices (`NONE` without an owner).
    pub pos_owner: u32,
}
