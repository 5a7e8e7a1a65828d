//! Derived data and validation: the org forest (pre/post intervals, depth, effective
//! suspension), membership permissions, and invariants I1–I3 checked on what a batch touched.

use super::{vec_at, DeviceSlot, Index, OrgDerived, OrgSlot, Slot, UserSlot};
use crate::error::{Error, ErrorCode, Result};
use crate::model::MAX_DEPTH;

/// What a batch of changes touched, for validating only that.
#[derive(Debug, Clone, Default)]
pub(crate) struct Touched {
    pub orgs_changed: bool,
    pub orgs_removed: Vec<OrgSlot>,
    pub users_removed: Vec<UserSlot>,
    pub memberships: Vec<(UserSlot, OrgSlot)>,
    pub devices: Vec<DeviceSlot>,
    /// Everything changed: check every entity.
    pub all: bool,
}

impl Index {
    /// Rebuilds the forest: children, pre/post intervals, depth, effective suspension, roots.
    /// Fails on a dangling parent, a cycle or a depth above 5.
    pub(crate) fn recompute_orgs(&mut self) -> Result<()> {
        let n = self.orgs.len();
        for c in &mut self.children {
            c.clear();
        }
        let mut roots = Vec::new();
        for o in self.org_slots() {
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
        let mut too_deep: Option<OrgSlot> = None;
        // Iterative DFS: (org, depth, parent's effective suspension, root, next child index).
        let mut stack: Vec<(OrgSlot, u8, bool, OrgSlot, usize)> = Vec::new();
        for r in roots {
            stack.push((r, 1, false, r, 0));
            self.enter(r, 1, false, r);
            while let Some(top) = stack.last_mut() {
                let (o, depth, _, root, next) = *top;
                let child = self.children.get(o.index()).and_then(|c| c.get(next)).copied();
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
                        if let Some(d) = self.derived.get_mut(o.index()) {
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
                if let Some(s) = seen.get_mut((*o).index()) {
                    *s = true;
                }
            }
            let culprit = self
                .org_slots()
                .filter(|o| self.org_present(*o) && !seen.get((*o).index()).copied().unwrap_or(true))
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

    fn enter(&mut self, o: OrgSlot, depth: u8, parent_eff: bool, root: OrgSlot) {
        let pre = self.preorder.len() as u32;
        self.preorder.push(o);
        let suspended = self.org(o).is_some_and(|r| r.suspended);
        if let Some(d) = self.derived.get_mut(o.index()) {
            *d = OrgDerived { pre, post: pre, depth, eff_suspended: parent_eff || suspended, root };
        }
    }

    /// Resolves the permissions of the membership of `u` in `o`; checks its references and role.
    fn refresh_membership(&mut self, u: UserSlot, o: OrgSlot) -> Result<()> {
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
        if let Some(m) = self.user_mems.get_mut(u.index()).and_then(|ms| ms.iter_mut().find(|m| m.org == o)) {
            m.perms = perms;
        }
        self.refresh_check(u);
        Ok(())
    }

    fn check_device(&self, d: DeviceSlot) -> Result<()> {
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
            for u in self.user_slots() {
                let orgs: Vec<OrgSlot> = self.mems(u).iter().map(|m| m.org).collect();
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
            for d in self.device_slots() {
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
