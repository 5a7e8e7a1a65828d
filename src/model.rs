//! The domain vocabulary of SPEC §1–§2: ids, permissions, permission sets, plans, statuses, built-in roles.

use std::fmt;

/// Longest id in bytes (SPEC §1).
pub const MAX_ID_LEN: usize = 128;
/// Deepest org: a root has depth 1 (SPEC §1, I1).
pub const MAX_DEPTH: u8 = 5;
/// The name of the role that always holds every permission.
pub const ADMIN_ROLE: &str = "Admin";

/// Why `s` is not a valid id, or `None` when it is one (1–128 bytes of `[A-Za-z0-9._:@-]`).
pub fn id_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("is empty")
    } else if s.len() > MAX_ID_LEN {
        Some("is longer than 128 bytes")
    } else if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-')) {
        Some("has a character outside [A-Za-z0-9._:@-]")
    } else {
        None
    }
}

/// Whether `s` is a valid id.
pub fn is_valid_id(s: &str) -> bool {
    id_problem(s).is_none()
}

/// One of the sixteen permissions of SPEC §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Permission {
    /// `devices.own.view`
    DevicesOwnView = 0,
    /// `devices.own.control`
    DevicesOwnControl,
    /// `devices.org.view`
    DevicesOrgView,
    /// `devices.org.control`
    DevicesOrgControl,
    /// `devices.add`
    DevicesAdd,
    /// `devices.transfer`
    DevicesTransfer,
    /// `devices.remove`
    DevicesRemove,
    /// `orgs.switch`
    OrgsSwitch,
    /// `orgs.create`
    OrgsCreate,
    /// `orgs.edit`
    OrgsEdit,
    /// `users.view`
    UsersView,
    /// `users.invite`
    UsersInvite,
    /// `users.edit`
    UsersEdit,
    /// `users.remove`
    UsersRemove,
    /// `users.suspend`
    UsersSuspend,
    /// `roles.edit`
    RolesEdit,
}

impl Permission {
    /// Every permission, in ascending order of its id string.
    pub const ALL: [Permission; 16] = [
        Self::DevicesAdd,
        Self::DevicesOrgControl,
        Self::DevicesOrgView,
        Self::DevicesOwnControl,
        Self::DevicesOwnView,
        Self::DevicesRemove,
        Self::DevicesTransfer,
        Self::OrgsCreate,
        Self::OrgsEdit,
        Self::OrgsSwitch,
        Self::RolesEdit,
        Self::UsersEdit,
        Self::UsersInvite,
        Self::UsersRemove,
        Self::UsersSuspend,
        Self::UsersView,
    ];

    /// The stable id, e.g. `devices.org.view`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DevicesOwnView => "devices.own.view",
            Self::DevicesOwnControl => "devices.own.control",
            Self::DevicesOrgView => "devices.org.view",
            Self::DevicesOrgControl => "devices.org.control",
            Self::DevicesAdd => "devices.add",
            Self::DevicesTransfer => "devices.transfer",
            Self::DevicesRemove => "devices.remove",
            Self::OrgsSwitch => "orgs.switch",
            Self::OrgsCreate => "orgs.create",
            Self::OrgsEdit => "orgs.edit",
            Self::UsersView => "users.view",
            Self::UsersInvite => "users.invite",
            Self::UsersEdit => "users.edit",
            Self::UsersRemove => "users.remove",
            Self::UsersSuspend => "users.suspend",
            Self::RolesEdit => "roles.edit",
        }
    }

    /// The name the dashboard shows, e.g. "View Organization Devices".
    pub const fn label(self) -> &'static str {
        match self {
            Self::DevicesOwnView => "View Own Devices",
            Self::DevicesOwnControl => "Control Own Devices",
            Self::DevicesOrgView => "View Organization Devices",
            Self::DevicesOrgControl => "Control Organization Devices",
            Self::DevicesAdd => "Add Devices",
            Self::DevicesTransfer => "Transfer Devices",
            Self::DevicesRemove => "Remove Devices",
            Self::OrgsSwitch => "Switch to sub-organizations",
            Self::OrgsCreate => "Create sub-organizations",
            Self::OrgsEdit => "Edit sub-organizations",
            Self::UsersView => "View Users",
            Self::UsersInvite => "Invite Users",
            Self::UsersEdit => "Edit Users",
            Self::UsersRemove => "Remove Users",
            Self::UsersSuspend => "Suspend Users",
            Self::RolesEdit => "Edit Roles",
        }
    }

    /// Parses a permission id.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.as_str() == s)
    }

    const fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions, kept as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perms(u16);

impl Perms {
    /// No permission.
    pub const NONE: Perms = Perms(0);
    /// Every permission.
    pub const ALL: Perms = Perms(u16::MAX);

    /// The set holding exactly `list`.
    pub fn of(list: &[Permission]) -> Perms {
        Perms(list.iter().fold(0, |acc, p| acc | p.bit()))
    }

    /// Whether `p` is in the set.
    pub const fn has(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// The set with `p` added.
    #[must_use]
    pub const fn with(self, p: Permission) -> Perms {
        Perms(self.0 | p.bit())
    }

    /// The union of two sets.
    #[must_use]
    pub const fn union(self, other: Perms) -> Perms {
        Perms(self.0 | other.0)
    }

    /// The permissions of `self` that are not in `other`.
    #[must_use]
    pub const fn without(self, other: Perms) -> Perms {
        Perms(self.0 & !other.0)
    }

    /// Whether every permission of `self` is in `other`.
    pub const fn is_subset_of(self, other: Perms) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The closure of SPEC §2: control implies view.
    #[must_use]
    pub const fn closed(self) -> Perms {
        let mut bits = self.0;
        if bits & Permission::DevicesOwnControl.bit() != 0 {
            bits |= Permission::DevicesOwnView.bit();
        }
        if bits & Permission::DevicesOrgControl.bit() != 0 {
            bits |= Permission::DevicesOrgView.bit();
        }
        Perms(bits)
    }

    /// The permissions of the set, in ascending order of their ids.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL.into_iter().filter(move |p| self.has(*p))
    }

    /// The permission ids of the set, ascending.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Permission::as_str).collect()
    }

    /// Parses a list of permission ids, closing the set.
    pub fn parse_list<S: AsRef<str>>(list: &[S]) -> Result<Perms, String> {
        let mut perms = Perms::NONE;
        for name in list {
            let name = name.as_ref();
            match Permission::parse(name) {
                Some(p) => perms = perms.with(p),
                None => return Err(name.to_owned()),
            }
        }
        Ok(perms.closed())
    }
}

/// The built-in permissions of a role name, if it is built in (SPEC §2).
pub fn builtin_role(name: &str) -> Option<Perms> {
    use Permission::*;
    match name {
        ADMIN_ROLE => Some(Perms::ALL),
        "Staff" => Some(Perms::of(&[
            DevicesOrgView,
            DevicesOrgControl,
            DevicesOwnView,
            DevicesOwnControl,
            DevicesAdd,
            UsersView,
        ])),
        "User" => Some(Perms::NONE),
        _ => None,
    }
}

/// A root org's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// `free`
    Free,
    /// `plus`
    Plus,
    /// `pro` (the default)
    #[default]
    Pro,
}

/// A user's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// May act and see.
    Active,
    /// Invited, not yet accepted.
    Pending,
    /// Suspended by an admin.
    Suspended,
}

/// What a check asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// See the device.
    #[default]
    View,
    /// Send commands to the device.
    Control,
}

impl Action {
    /// Parses `view` or `control`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "view" => Some(Self::View),
            "control" => Some(Self::Control),
            _ => None,
        }
    }

    /// `view` or `control`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::View => "view",
            Self::Control => "control",
        }
    }

    /// The org-wide device permission for this action.
    pub const fn org_permission(self) -> Permission {
        match self {
            Self::View => Permission::DevicesOrgView,
            Self::Control => Permission::DevicesOrgControl,
        }
    }

    /// The own-device permission for this action.
    pub const fn own_permission(self) -> Permission {
        match self {
            Self::View => Permission::DevicesOwnView,
            Self::Control => Permission::DevicesOwnControl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_sorted_and_complete() {
        let names: Vec<_> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert_eq!(Perms::ALL.iter().count(), 16);
    }

    #[test]
    fn labels_are_the_seed_names_and_distinct() {
        assert_eq!(Permission::DevicesOrgView.label(), "View Organization Devices");
        assert_eq!(Permission::DevicesOwnView.label(), "View Own Devices");
        let mut labels: Vec<_> = Permission::ALL.iter().map(|p| p.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), 16);
    }

    #[test]
    fn closure_adds_view() {
        let p = Perms::of(&[Permission::DevicesOrgControl]).closed();
        assert!(p.has(Permission::DevicesOrgView));
        assert!(!p.has(Permission::DevicesOwnView));
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("thermo-1"));
        assert!(is_valid_id("a@b.c:d_e"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id(&"x".repeat(129)));
        assert!(is_valid_id(&"x".repeat(128)));
    }
}
