//! Decisions of SPEC §3: view/control checks with explanations, visible-device lists, org switching.

use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Error, ErrorCode, Result};
use crate::index::{sort_slots, DeviceSlot, Index, Mem, OrgSlot, Place, UserSlot};
use crate::model::{Action, Permission, Perms};

/// A decision code: the reason of an allow or a deny (SPEC §3 and §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Code {
    /// Allowed through a membership in the device's org with an org-wide permission.
    AllowOrg,
    /// Allowed because the user owns the device.
    AllowOwn,
    /// Allowed through a membership in an ancestor org with `orgs.switch`.
    AllowSubOrg,
    /// A command is allowed.
    Allow,
    /// The user (or actor) is not in the snapshot.
    DenyUnknownUser,
    /// The device is not in the snapshot.
    DenyUnknownDevice,
    /// The user is pending or suspended.
    DenyUserInactive,
    /// The device's org or an ancestor is suspended.
    DenyOrgSuspended,
    /// No membership grants it.
    #[default]
    DenyNoPermission,
    /// The command would give more than the actor has.
    DenyEscalation,
    /// The command would leave a root org without an active Admin.
    DenyLastAdmin,
    /// The root org's plan does not allow it.
    DenyPlan,
    /// The org would be deeper than five levels.
    DenyDepth,
    /// The org still has devices, members or sub-orgs.
    DenyNotEmpty,
    /// A target id is unknown, invalid, cross-tree or already exists.
    DenyInvalidTarget,
}

impl Code {
    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AllowOrg => "ALLOW_ORG",
            Self::AllowOwn => "ALLOW_OWN",
            Self::AllowSubOrg => "ALLOW_SUB_ORG",
            Self::Allow => "ALLOW",
            Self::DenyUnknownUser => "DENY_UNKNOWN_USER",
            Self::DenyUnknownDevice => "DENY_UNKNOWN_DEVICE",
            Self::DenyUserInactive => "DENY_USER_INACTIVE",
            Self::DenyOrgSuspended => "DENY_ORG_SUSPENDED",
            Self::DenyNoPermission => "DENY_NO_PERMISSION",
            Self::DenyEscalation => "DENY_ESCALATION",
            Self::DenyLastAdmin => "DENY_LAST_ADMIN",
            Self::DenyPlan => "DENY_PLAN",
            Self::DenyDepth => "DENY_DEPTH",
            Self::DenyNotEmpty => "DENY_NOT_EMPTY",
            Self::DenyInvalidTarget => "DENY_INVALID_TARGET",
        }
    }

    /// Whether the code allows.
    pub const fn is_allow(self) -> bool {
        matches!(self, Self::AllowOrg | Self::AllowOwn | Self::AllowSubOrg | Self::Allow)
    }
}

/// Written as its wire string ([`Code::as_str`]): one table of names, not a second one derived.
impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An explained decision: allowed or not, a stable code, and for an allow the membership
/// (org, role) and the permission that granted it. A denied command names what it lacks
/// (SPEC §6): `permission` and `org` for `DENY_NO_PERMISSION`, `permissions` (and `org`) for
/// `DENY_ESCALATION`, the blocking `device`, `user` or sub-`org` for `DENY_NOT_EMPTY`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Decision {
    /// Whether it is allowed.
    pub allowed: bool,
    /// Why.
    pub code: Code,
    /// The org of the granting membership; for a denied command the org the missing
    /// permission is needed in, or the sub-org that keeps an org from being deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The role of the granting membership.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The permission that granted it (or, for a denied command, the one missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    /// `DENY_ESCALATION`: the permissions beyond the actor's in `org`, ascending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// `DENY_NOT_EMPTY`: a member that keeps the org from being deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `DENY_NOT_EMPTY`: a device that keeps the org from being deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl Decision {
    /// A decision with just a code.
    pub fn of(code: Code) -> Self {
        Self { allowed: code.is_allow(), code, ..Self::default() }
    }
}

/// The outcome of a single check, without allocation: the granting membership's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow(Code, usize),
    Deny(Code),
}

/// What one membership of `u` (in org `o`, with closed permissions `perms`) grants for `action`
/// on a device at `place`: the device's org itself (`ALLOW_ORG`), the user's own device there
/// (`ALLOW_OWN`), or a device below `o` with `orgs.switch` (`ALLOW_SUB_ORG`). The one statement
/// of the rule, for `grant` and the check-record path of `can_slots`.
#[inline(always)]
fn membership_grant(ix: &Index, o: OrgSlot, perms: Perms, u: UserSlot, place: Place, action: Action) -> Option<Code> {
    let orgp = action.org_permission();
    if o == place.org {
        if perms.has(orgp) {
            Some(Code::AllowOrg)
        } else if perms.has(action.own_permission()) && place.owner == u {
            Some(Code::AllowOwn)
        } else {
            None
        }
    } else if perms.has(orgp) && perms.has(Permission::OrgsSwitch) && ix.strictly_below(place.org, o) {
        Some(Code::AllowSubOrg)
    } else {
        None
    }
}

/// Finds the best granting membership of `u` for a device at `place` (SPEC §3 precedence).
#[inline(always)]
pub(crate) fn grant(ix: &Index, mems: &[Mem], u: UserSlot, place: Place, action: Action) -> Option<(Code, usize)> {
    let mut own: Option<usize> = None;
    let mut sub: Option<(u8, usize)> = None;
    for (i, m) in mems.iter().enumerate() {
        match membership_grant(ix, m.org, m.perms, u, place, action) {
            Some(Code::AllowOrg) => return Some((Code::AllowOrg, i)),
            Some(Code::AllowOwn) => own = Some(i),
            Some(_) => {
                let depth = ix.der(m.org).depth;
                if sub.is_none_or(|(best, _)| depth > best) {
                    sub = Some((depth, i));
                }
            }
            None => {}
        }
    }
    own.map(|i| (Code::AllowOwn, i)).or(sub.map(|(_, i)| (Code::AllowSubOrg, i)))
}

/// Org grants of one listing: `(org, whole subtree?)`, plus orgs where only own devices count.
#[derive(Debug, Default)]
struct Grants {
    orgs: Vec<(OrgSlot, bool)>,
    own: Vec<OrgSlot>,
}

impl Engine {
    pub(crate) fn active_user(&self, user: &str) -> Option<UserSlot> {
        self.ix.user_ids.get(user).filter(|u| self.ix.is_active(*u))
    }

    #[inline(always)]
    pub(crate) fn verdict(&self, user: &str, device: &str, action: Action) -> Verdict {
        let ix = &self.ix;
        let Some(u) = ix.user_ids.get(user).filter(|u| ix.user(*u).is_some()) else {
            return Verdict::Deny(Code::DenyUnknownUser);
        };
        let Some(place) = ix.dev_ids.get(device).map(|d| ix.place(d)).filter(|p| p.org != OrgSlot::NONE) else {
            return Verdict::Deny(Code::DenyUnknownDevice);
        };
        self.verdict_at(u, place, action)
    }

    /// The verdict for user slot `u` on a present device at `place`.
    #[inline(always)]
    pub(crate) fn verdict_at(&self, u: UserSlot, place: Place, action: Action) -> Verdict {
        let ix = &self.ix;
        if !ix.is_active(u) {
            return Verdict::Deny(Code::DenyUserInactive);
        }
        if ix.der(place.org).eff_suspended {
            return Verdict::Deny(Code::DenyOrgSuspended);
        }
        match grant(ix, ix.mems(u), u, place, action) {
            Some((code, i)) => Verdict::Allow(code, i),
            None => Verdict::Deny(Code::DenyNoPermission),
        }
    }

    /// Whether user slot `u` may do `action` on device slot `d` (any slot numbers: an absent or
    /// unknown user or device gives `false`).
    #[inline(never)]
    pub(crate) fn can_slots(&self, u: UserSlot, d: DeviceSlot, action: Action) -> bool {
        let ix = &self.ix;
        let place = ix.place(d);
        let c = ix.user_check(u);
        if place.org == OrgSlot::NONE || !c.active {
            return false;
        }
        if c.overflow {
            return matches!(self.verdict_at(u, place, action), Verdict::Allow(..));
        }
        if ix.der(place.org).eff_suspended {
            return false;
        }
        c.inline().iter().any(|&(o, perms)| membership_grant(ix, o, perms, u, place, action).is_some())
    }

    /// Whether `user` may view `device`.
    pub fn can_view(&self, user: &str, device: &str) -> bool {
        matches!(self.verdict(user, device, Action::View), Verdict::Allow(..))
    }

    /// Whether `user` may send commands to `device`.
    pub fn can_control(&self, user: &str, device: &str) -> bool {
        matches!(self.verdict(user, device, Action::Control), Verdict::Allow(..))
    }

    /// Whether `user` may do `action` on `device`.
    pub fn can(&self, user: &str, device: &str, action: Action) -> bool {
        matches!(self.verdict(user, device, action), Verdict::Allow(..))
    }

    /// The decision for `user` doing `action` on `device`, with its reason.
    pub fn explain(&self, user: &str, device: &str, action: Action) -> Decision {
        match self.verdict(user, device, action) {
            Verdict::Deny(code) => self.explain_denial(code, device, action),
            Verdict::Allow(code, i) => {
                let ix = &self.ix;
                let m = ix.user_ids.get(user).and_then(|u| ix.mems(u).get(i));
                let permission = match code {
                    Code::AllowOwn => action.own_permission(),
                    _ => action.org_permission(),
                };
                Decision {
                    allowed: true,
                    code,
                    org: m.map(|m| ix.org_name(m.org).to_owned()),
                    role: m.map(|m| m.role.as_str().to_owned()),
                    permission: Some(permission.as_str().to_owned()),
                    ..Decision::default()
                }
            }
        }
    }

    /// A denied check with what it lacks, as a denied command names it (SPEC §6 `Decision`):
    /// `DENY_NO_PERMISSION` names the org-wide device permission of the action and the device's
    /// org (holding it there, or above with `orgs.switch`, would grant); `DENY_ORG_SUSPENDED`
    /// names the suspended org (the device's own, else its nearest suspended ancestor).
    fn explain_denial(&self, code: Code, device: &str, action: Action) -> Decision {
        let ix = &self.ix;
        let Some(o) = ix.dev_ids.get(device).and_then(|d| ix.device(d)).map(|dev| dev.org) else {
            return Decision::of(code);
        };
        let org = match code {
            Code::DenyNoPermission => o,
            Code::DenyOrgSuspended => {
                // INVARIANT: the parent chain is acyclic and at most MAX_DEPTH long (I1).
                let mut at = o;
                for _ in 0..crate::model::MAX_DEPTH {
                    match ix.org(at) {
                        Some(r) if !r.suspended => match r.parent {
                            Some(p) => at = p,
                            None => break,
                        },
                        _ => break,
                    }
                }
                at
            }
            _ => return Decision::of(code),
        };
        let permission = (code == Code::DenyNoPermission).then(|| action.org_permission().as_str().to_owned());
        Decision { org: Some(ix.org_name(org).to_owned()), permission, ..Decision::of(code) }
    }

    /// Whether `org` is one of `switchable_orgs(user)`.
    pub fn is_switchable(&self, user: &str, org: &str) -> bool {
        let ix = &self.ix;
        let (Some(u), Some(o)) = (self.active_user(user), ix.org_ids.get(org)) else { return false };
        ix.org_present(o) && !ix.der(o).eff_suspended && ix.mems(u).iter().any(|m| reaches(ix, m, o))
    }

    /// The orgs `user` may switch to, ascending by id (SPEC §3).
    pub fn switchable_orgs(&self, user: &str) -> Vec<&str> {
        let ix = &self.ix;
        let Some(u) = self.active_user(user) else { return Vec::new() };
        let mut out: Vec<OrgSlot> = Vec::new();
        for m in ix.mems(u) {
            if m.perms.has(Permission::OrgsSwitch) {
                out.extend(ix.subtree(m.org).iter().filter(|o| !ix.der(**o).eff_suspended));
            } else if !ix.der(m.org).eff_suspended {
                out.push(m.org);
            }
        }
        ix.org_ids.sort(&mut out);
        out.dedup();
        out.into_iter().map(|o| ix.org_name(o)).collect()
    }

    /// The union of the permissions of `user`'s memberships that reach `org` (SPEC §3).
    pub fn permissions_in(&self, user: &str, org: &str) -> Perms {
        let ix = &self.ix;
        let (Some(u), Some(o)) = (self.active_user(user), ix.org_ids.get(org)) else { return Perms::NONE };
        self.permissions_in_slots(u, o)
    }

    pub(crate) fn permissions_in_slots(&self, u: UserSlot, o: OrgSlot) -> Perms {
        let ix = &self.ix;
        if !ix.is_active(u) || !ix.org_present(o) || ix.der(o).eff_suspended {
            return Perms::NONE;
        }
        ix.mems(u).iter().filter(|m| reaches(ix, m, o)).fold(Perms::NONE, |acc, m| acc.union(m.perms))
    }

    /// The devices `user` may view (or control), ascending by id; limited to the subtree of
    /// `active_org`, which must be switchable (`NOT_SWITCHABLE` otherwise).
    pub fn visible_devices(&self, user: &str, action: Action, active_org: Option<&str>) -> Result<Vec<&str>> {
        let slots = self.visible_slots(user, action, active_org)?;
        Ok(slots.into_iter().map(|d| self.ix.device_name(d)).collect())
    }

    /// The device slots of `visible_devices`, ascending by id.
    pub(crate) fn visible_slots(
        &self,
        user: &str,
        action: Action,
        active_org: Option<&str>,
    ) -> Result<Vec<DeviceSlot>> {
        let mut out = Vec::new();
        self.visible_slots_into(user, action, active_org, &mut out)?;
        Ok(out)
    }

    /// [`Engine::visible_slots`] into `out` (cleared first).
    pub(crate) fn visible_slots_into(
        &self,
        user: &str,
        action: Action,
        active_org: Option<&str>,
        out: &mut Vec<DeviceSlot>,
    ) -> Result<()> {
        let ix = &self.ix;
        out.clear();
        let active = match active_org {
            None => None,
            Some(a) => {
                if !self.is_switchable(user, a) {
                    return Err(Error::new(
                        ErrorCode::NotSwitchable,
                        format!("org `{a}` is not switchable for user `{user}`"),
                    ));
                }
                ix.org_ids.get(a)
            }
        };
        if let Some(u) = ix.user_ids.get(user) {
            self.visible_of_slot(u, action, active, true, out);
        }
        Ok(())
    }

    /// The device slots user slot `u` may view (or control), ascending by id, within the
    /// subtree of `active` (not checked here), into `out` (cleared first; empty for an absent
    /// or inactive user). Returns whether that is every device; then `out` is left empty
    /// unless `fill_every` (the JS wrapper keeps that list itself).
    pub(crate) fn visible_of_slot(
        &self,
        u: UserSlot,
        action: Action,
        active: Option<OrgSlot>,
        fill_every: bool,
        out: &mut Vec<DeviceSlot>,
    ) -> bool {
        out.clear();
        if !self.ix.is_active(u) {
            return false;
        }
        let grants = self.grants(u, action, active);
        self.collect(u, &grants, fill_every, out)
    }

    fn grants(&self, u: UserSlot, action: Action, active: Option<OrgSlot>) -> Grants {
        let ix = &self.ix;
        let orgp = action.org_permission();
        let ownp = action.own_permission();
        let mut g = Grants::default();
        for m in ix.mems(u) {
            if m.perms.has(orgp) {
                g.orgs.push((m.org, m.perms.has(Permission::OrgsSwitch)));
            } else if m.perms.has(ownp) {
                g.own.push(m.org);
            }
        }
        if let Some(a) = active {
            g.orgs = g
                .orgs
                .into_iter()
                .filter_map(|(o, sub)| {
                    if sub && ix.in_subtree(a, o) {
                        Some((a, true))
                    } else if ix.in_subtree(o, a) {
                        Some((o, sub))
                    } else {
                        None
                    }
                })
                .collect();
            g.own.retain(|o| ix.in_subtree(*o, a));
        }
        // Make the grants disjoint: one per org (a subtree grant wins), none below a subtree grant.
        let mut keyed: Vec<(OrgSlot, u32)> = g.orgs.iter().map(|&(o, sub)| (o, u32::from(!sub))).collect();
        crate::index::sort_pairs(&mut keyed, &|a, b| a.cmp(&b));
        keyed.dedup_by_key(|&mut (o, _)| o);
        g.orgs = keyed.into_iter().map(|(o, not_sub)| (o, not_sub == 0)).collect();
        let all = g.orgs.clone();
        let below_subtree = |o: OrgSlot| all.iter().any(|&(h, sub)| sub && ix.strictly_below(o, h));
        g.orgs.retain(|&(o, _)| !below_subtree(o));
        g.own.retain(|&o| !below_subtree(o) && !all.iter().any(|&(h, _)| h == o));
        g
    }

    /// The devices of the grants `g` of user slot `u`, ascending by id, into `out`. Devices are
    /// ranked by id (`Index::ranks`, computed by the first listing after devices came or went),
    /// so no listing compares strings: a small answer sorts its ranks, a larger one marks them in
    /// a bitset over ranks and reads it in order, and an answer of every device is `by_id`
    /// itself.
    fn collect(&self, u: UserSlot, g: &Grants, fill_every: bool, out: &mut Vec<DeviceSlot>) -> bool {
        let ix = &self.ix;
        let mut orgs: Vec<OrgSlot> = Vec::new();
        for &(o, sub) in &g.orgs {
            if sub {
                let tree = ix.subtree(o);
                let mut i = 0usize;
                while let Some(&x) = tree.get(i) {
                    let d = ix.der(x);
                    if d.eff_suspended {
                        i += (d.post - d.pre) as usize + 1;
                    } else {
                        orgs.push(x);
                        i += 1;
                    }
                }
            } else if !ix.der(o).eff_suspended {
                orgs.push(o);
            }
        }
        let own_ok = |d: DeviceSlot| {
            let org = ix.device_org(d);
            g.own.contains(&org) && !ix.der(org).eff_suspended
        };
        // The grants are disjoint (see `grants`), so `granted` counts each device once.
        let granted: usize = orgs.iter().map(|o| ix.devices_of_org(*o).len()).sum();
        if granted == ix.by_id.len() && granted > 0 {
            if fill_every {
                out.extend_from_slice(&ix.by_id);
            }
            return true;
        }
        let owned = if g.own.is_empty() { &[][..] } else { ix.owned_by(u) };
        if let ([o], []) = (orgs.as_slice(), owned) {
            out.extend_from_slice(ix.devices_of_org(*o)); // already in id order
            return false;
        }
        let ranks = ix.ranks();
        // A few candidates sort their ranks; more go through a bitset over ranks (measured on the
        // benchmark world: a dealer's 254 devices take ~10 µs by the bitset, several times that
        // by sorting).
        if granted + owned.len() <= SMALL_LIST {
            // Sort the ranks themselves (no lookups while sorting), then map them to slots.
            let mut found: Vec<u32> = Vec::with_capacity(granted + owned.len());
            for o in &orgs {
                found.extend(ix.devices_of_org(*o).iter().map(|d| ranks.of(*d)));
            }
            found.extend(owned.iter().copied().filter(|d| own_ok(*d)).map(|d| ranks.of(d)));
            sort_slots(&mut found, &|a, b| a.cmp(&b));
            out.extend(found.iter().filter_map(|r| ranks.at(*r as usize)));
            return false;
        }
        // Two levels: `bits` over ranks, and `words` marking the words of `bits` that have a bit
        // set, so reading the answer in order skips the empty words (a dealer's 254 devices
        // are spread over all 100k ranks: ~250 words of 1,563 hold any).
        let mut bits = vec![0u64; ix.by_id.len() / 64 + 1];
        let mut words = vec![0u64; bits.len() / 64 + 1];
        let mut mark = |d: DeviceSlot| {
            let r = ranks.of(d) as usize;
            if let (Some(b), Some(w)) = (bits.get_mut(r / 64), words.get_mut(r / 4096)) {
                *b |= 1 << (r % 64);
                *w |= 1 << (r / 64 % 64);
            }
        };
        for o in &orgs {
            ix.devices_of_org(*o).iter().for_each(|d| mark(*d));
        }
        owned.iter().filter(|d| own_ok(**d)).for_each(|d| mark(*d));
        out.reserve(granted + owned.len());
        for (i, &word) in words.iter().enumerate() {
            for_each_bit(word, |j| {
                let at = i * 64 + j;
                for_each_bit(bits.get(at).copied().unwrap_or(0), |k| {
                    if let Some(d) = ranks.at(at * 64 + k) {
                        out.push(d);
                    }
                });
            });
        }
        false
    }

    /// Keeps the ids of `devices` that `user` may view (or control), in input order; unknown ids are dropped.
    pub fn filter_devices<'a, S: AsRef<str>>(&self, user: &str, devices: &'a [S], action: Action) -> Vec<&'a str> {
        let allowed = self.device_check(user, action);
        devices.iter().map(AsRef::as_ref).filter(|id| allowed(id.as_bytes())).collect()
    }

    /// A check of many devices for one user and action: the user is resolved once; unknown
    /// devices (and an unknown or inactive user) give `false`.
    pub(crate) fn device_check(&self, user: &str, action: Action) -> impl Fn(&[u8]) -> bool + '_ {
        let ix = &self.ix;
        let u = self.active_user(user);
        move |id: &[u8]| u.is_some_and(|u| ix.dev_ids.get_bytes(id).is_some_and(|d| self.can_slots(u, d, action)))
    }
}

/// Calls `f` with the index of each bit set in `w`, ascending.
fn for_each_bit(mut w: u64, mut f: impl FnMut(usize)) {
    while w != 0 {
        f(w.trailing_zeros() as usize);
        w &= w - 1;
    }
}

/// Up to this many candidate devices, a listing sorts their ranks; above, it uses a bitset.
const SMALL_LIST: usize = 64;

/// Whether membership `m` reaches org `o` (`o` is its org, or below it with `orgs.switch`).
pub(crate) fn reaches(ix: &Index, m: &Mem, o: OrgSlot) -> bool {
    m.org == o || (m.perms.has(Permission::OrgsSwitch) && ix.strictly_below(o, m.org))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use crate::generate::{generate, WorldSize};
    use crate::{Action, Engine};

    /// Every listing equals the brute-force answer: each device checked, in id order.
    fn assert_lists(e: &Engine) {
        let doc = e.to_doc();
        let mut ids: Vec<&str> = doc.devices.iter().map(|d| d.id.as_str()).collect();
        ids.sort_unstable();
        for user in doc.users.iter().map(|u| u.id.as_str()) {
            for action in [Action::View, Action::Control] {
                let want: Vec<&str> = ids.iter().copied().filter(|d| e.can(user, d, action)).collect();
                assert_eq!(e.visible_devices(user, action, None).unwrap(), want, "{user} {action:?}");
            }
        }
    }

    #[test]
    fn listings_stay_in_id_order_as_devices_come_and_go() {
        // Big enough for every path: sorted ranks, the bitset, and every device.
        let size = WorldSize { fanout: [2, 3, 2, 2], users: 120, devices: 900, seed: 7 };
        let mut e = Engine::from_doc(generate(size)).unwrap();
        assert_lists(&e);
        // New ids that sort first, last and in between, and removals: ranks shift.
        let org = e.to_doc().orgs[3].id.to_string();
        let put = |id: &str| format!(r#"{{"op":"putDevice","device":{{"id":"{id}","name":"n","org":"{org}"}}}}"#);
        let ops =
            [put("a-first"), put("d000100x"), put("z-last"), r#"{"op":"removeDevice","id":"d000007"}"#.to_owned()];
        let delta = format!(r#"{{"format":"fleetgate/delta@1","from":1,"to":2,"ops":[{}]}}"#, ops.join(","));
        e.apply_delta_json(&delta).unwrap();
        assert_lists(&e);
        // A failed delta (a device in an unknown org) leaves the lists as they were.
        let bad = format!(
            r#"{{"format":"fleetgate/delta@1","from":2,"to":3,"ops":[{},{{"op":"putDevice","device":{{"id":"b","name":"n","org":"nowhere"}}}}]}}"#,
            put("a-again")
        );
        assert!(e.apply_delta_json(&bad).is_err());
        assert_lists(&e);
    }
}
