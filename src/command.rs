//! Commands of SPEC §5: strict parsing, decisions (with the no-escalation and last-admin
//! rules) and the delta an allowed command causes. `decide` and `apply` share one code path,
//! so they cannot disagree.

use serde::{Deserialize, Deserializer, Serialize};

use crate::decide::{Code, Decision};
use crate::delta::{Delta, Op};
use crate::engine::Engine;
use crate::error::{Error, ErrorCode, Result};
use crate::index::{DeviceSlot, OrgSlot, UserSlot};
use crate::model::{Permission, Perms, Plan, Status, ADMIN_ROLE, MAX_DEPTH};
use crate::snapshot::{truncate_for_message, DeviceDoc, Id, MembershipDoc, OrgDoc, RoleName, UserDoc};
use crate::tagged::Fields;

/// The id a preview uses for the user an `invite` would create, when none is given.
pub const PLACEHOLDER_USER_ID: &str = "invitee:pending";
/// Longest display name (org or device) a command may set, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// A command of SPEC §5, performed by an actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
#[allow(missing_docs)]
pub enum Command {
    /// Create a sub-organization.
    CreateOrg { id: Id, name: String, parent: Id },
    /// Invite a new user (pending) into an org with a role.
    Invite {
        email: String,
        org: Id,
        role: RoleName,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<Id>,
    },
    /// Change a member's role.
    SetRole { user: Id, org: Id, role: RoleName },
    /// Remove a member from an org; their devices there lose their owner.
    RemoveMember { user: Id, org: Id },
    /// Suspend a user.
    SuspendUser { user: Id },
    /// Reactivate a suspended user.
    ReactivateUser { user: Id },
    /// Add a device to an org.
    AddDevice { id: Id, name: String, org: Id, owner: Option<Id> },
    /// Give a device a new owner (moving it to the owner's org).
    TransferDevice {
        device: Id,
        owner: Id,
        #[serde(skip_serializing_if = "Option::is_none")]
        org: Option<Id>,
    },
    /// Move a device to another org of the same tree.
    MoveDevice { device: Id, org: Id },
    /// Remove a device.
    RemoveDevice { device: Id },
    /// Set the permissions of a role in an org's role table.
    SetRolePermissions { org: Id, role: RoleName, permissions: Vec<String> },
    /// Suspend a sub-org (and so its subtree).
    SuspendOrg { org: Id },
    /// Resume a suspended sub-org.
    ResumeOrg { org: Id },
    /// Delete an empty sub-org.
    DeleteOrg { org: Id },
    /// Claim an unowned device with its claim code (checked by the server).
    ClaimDevice { device: Id, code: String, org: Id },
}

impl Command {
    /// Parses command JSON text (`INVALID_COMMAND` on any schema problem).
    pub fn parse(text: &str) -> Result<Self> {
        let cmd: Command = serde_json::from_str(text).map_err(|e| {
            let mut err = Error::from_json(text, &e, ErrorCode::InvalidCommand, "command");
            if err.kind() == ErrorCode::InvalidJson {
                err = Error::new(ErrorCode::InvalidCommand, err.message());
            }
            err
        })?;
        cmd.check()?;
        Ok(cmd)
    }

    /// Parses an already-decoded JSON value.
    pub fn from_value(value: &serde_json::Value) -> Result<Self> {
        Self::parse(&value.to_string())
    }

    /// The op name, e.g. `moveDevice`.
    pub fn op(&self) -> &'static str {
        match self {
            Self::CreateOrg { .. } => "createOrg",
            Self::Invite { .. } => "invite",
            Self::SetRole { .. } => "setRole",
            Self::RemoveMember { .. } => "removeMember",
            Self::SuspendUser { .. } => "suspendUser",
            Self::ReactivateUser { .. } => "reactivateUser",
            Self::AddDevice { .. } => "addDevice",
            Self::TransferDevice { .. } => "transferDevice",
            Self::MoveDevice { .. } => "moveDevice",
            Self::RemoveDevice { .. } => "removeDevice",
            Self::SetRolePermissions { .. } => "setRolePermissions",
            Self::SuspendOrg { .. } => "suspendOrg",
            Self::ResumeOrg { .. } => "resumeOrg",
            Self::DeleteOrg { .. } => "deleteOrg",
            Self::ClaimDevice { .. } => "claimDevice",
        }
    }

    /// Field checks beyond the JSON types: names, emails, permission ids.
    fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorCode::InvalidCommand, msg));
        match self {
            Self::CreateOrg { name, .. } | Self::AddDevice { name, .. }
                if name.trim().is_empty() || name.len() > MAX_NAME_LEN =>
            {
                bad(format!("`name` must be 1 to {MAX_NAME_LEN} bytes and not blank"))
            }
            Self::Invite { email, .. } if !valid_email(email) => {
                bad(format!("invalid `email` `{}`", truncate_for_message(email)))
            }
            Self::SetRolePermissions { permissions, .. } => {
                match permissions.iter().position(|p| Permission::parse(p).is_none()) {
                    Some(i) => bad(format!(
                        "command at `permissions[{i}]`: unknown permission `{}`",
                        truncate_for_message(permissions.get(i).map_or("", String::as_str))
                    )),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

/// The command names, for error messages.
const OPS: &[&str] = &[
    "createOrg",
    "invite",
    "setRole",
    "removeMember",
    "suspendUser",
    "reactivateUser",
    "addDevice",
    "transferDevice",
    "moveDevice",
    "removeDevice",
    "setRolePermissions",
    "suspendOrg",
    "resumeOrg",
    "deleteOrg",
    "claimDevice",
];

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut f = Fields::read(d, "command")?;
        let cmd = match f.op.as_str() {
            "createOrg" => Command::CreateOrg { id: f.take("id")?, name: f.take("name")?, parent: f.take("parent")? },
            "invite" => Command::Invite {
                email: f.take("email")?,
                org: f.take("org")?,
                role: f.take("role")?,
                user_id: f.opt("userId")?,
            },
            "setRole" => Command::SetRole { user: f.take("user")?, org: f.take("org")?, role: f.take("role")? },
            "removeMember" => Command::RemoveMember { user: f.take("user")?, org: f.take("org")? },
            "suspendUser" => Command::SuspendUser { user: f.take("user")? },
            "reactivateUser" => Command::ReactivateUser { user: f.take("user")? },
            "addDevice" => Command::AddDevice {
                id: f.take("id")?,
                name: f.take("name")?,
                org: f.take("org")?,
                owner: f.opt("owner")?,
            },
            "transferDevice" => {
                Command::TransferDevice { device: f.take("device")?, owner: f.take("owner")?, org: f.opt("org")? }
            }
            "moveDevice" => Command::MoveDevice { device: f.take("device")?, org: f.take("org")? },
            "removeDevice" => Command::RemoveDevice { device: f.take("device")? },
            "setRolePermissions" => Command::SetRolePermissions {
                org: f.take("org")?,
                role: f.take("role")?,
                permissions: f.take("permissions")?,
            },
            "suspendOrg" => Command::SuspendOrg { org: f.take("org")? },
            "resumeOrg" => Command::ResumeOrg { org: f.take("org")? },
            "deleteOrg" => Command::DeleteOrg { org: f.take("org")? },
            "claimDevice" => {
                Command::ClaimDevice { device: f.take("device")?, code: f.take("code")?, org: f.take("org")? }
            }
            _ => return Err(f.unknown_op(OPS)),
        };
        f.finish()?;
        Ok(cmd)
    }
}

/// A minimal email check: `local@domain`, no spaces or control characters, at most 254 bytes.
pub fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && s.len() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// What deciding a command gives: the decision, and for an allow the ops it causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// The ops of the resulting delta (empty when denied).
    pub ops: Vec<Op>,
}

type Step<T> = std::result::Result<T, Code>;
/// A step that may deny, naming what the actor lacks.
type Denied<T> = std::result::Result<T, Deny>;

/// A denied command with what it lacks, as slots (made a [`Decision`] once, at the end).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deny {
    code: Code,
    /// The org the missing permissions are needed in, or the sub-org that blocks a deletion.
    org: Option<OrgSlot>,
    /// `DENY_NO_PERMISSION`: the missing permission.
    permission: Option<Permission>,
    /// `DENY_ESCALATION`: the permissions beyond the actor's.
    beyond: Perms,
    /// `DENY_NOT_EMPTY`: a blocking member.
    user: Option<UserSlot>,
    /// `DENY_NOT_EMPTY`: a blocking device.
    device: Option<DeviceSlot>,
}

impl From<Code> for Deny {
    fn from(code: Code) -> Self {
        Self { code, org: None, permission: None, beyond: Perms::NONE, user: None, device: None }
    }
}

impl Deny {
    fn decision(self, ix: &crate::index::Index) -> Decision {
        let names = (!self.beyond.is_empty()).then(|| self.beyond.names().into_iter().map(str::to_owned).collect());
        Decision {
            org: self.org.map(|o| ix.org_ids.name(o).to_owned()),
            permission: self.permission.map(|p| p.as_str().to_owned()),
            permissions: names,
            user: self.user.map(|u| ix.user_ids.name(u).to_owned()),
            device: self.device.map(|d| ix.dev_ids.name(d).to_owned()),
            ..Decision::of(self.code)
        }
    }
}

fn need(ok: bool, code: Code) -> Step<()> {
    if ok {
        Ok(())
    } else {
        Err(code)
    }
}

impl Engine {
    /// Decides `command` for `actor` without changing anything (SPEC §5).
    pub fn decide(&self, actor: &str, command: &Command) -> Decision {
        self.evaluate(actor, command, true).decision
    }

    /// Decides a command and computes the delta it causes; `None` with the decision when denied.
    /// A command that creates a user (`invite`) must carry its `userId` here.
    pub fn command_delta(&self, actor: &str, command: &Command) -> Result<(Decision, Option<Delta>)> {
        if let Command::Invite { user_id: None, .. } = command {
            return Err(Error::new(ErrorCode::InvalidCommand, "`invite` needs the new user's `userId`"));
        }
        let out = self.evaluate(actor, command, false);
        if out.decision.allowed {
            let delta = Delta::new(self.revision, self.revision.saturating_add(1), out.ops);
            Ok((out.decision, Some(delta)))
        } else {
            Ok((out.decision, None))
        }
    }

    /// Decides and, when allowed, applies a command; returns the decision and the applied delta.
    pub fn apply_command(&mut self, actor: &str, command: &Command) -> Result<(Decision, Option<Delta>)> {
        let (decision, delta) = self.command_delta(actor, command)?;
        if let Some(d) = &delta {
            self.apply_delta(d)?;
        }
        Ok((decision, delta))
    }

    /// The decision and ops of a command. With `preview`, an `invite` without `userId` uses a placeholder.
    pub(crate) fn evaluate(&self, actor: &str, command: &Command, preview: bool) -> Outcome {
        let result = self.evaluate_steps(actor, command, preview);
        match result {
            Ok(ops) => Outcome { decision: Decision::of(Code::Allow), ops },
            Err(deny) => Outcome { decision: deny.decision(&self.ix), ops: Vec::new() },
        }
    }

    fn evaluate_steps(&self, actor: &str, command: &Command, preview: bool) -> Denied<Vec<Op>> {
        let ix = &self.ix;
        let a = ix.user_ids.get(actor).filter(|u| ix.user(*u).is_some()).ok_or(Code::DenyUnknownUser)?;
        need(ix.is_active(a), Code::DenyUserInactive)?;
        let org_of =
            |id: &Id| ix.org_ids.get(id.as_str()).filter(|o| ix.org_present(*o)).ok_or(Code::DenyInvalidTarget);
        let user_of =
            |id: &Id| ix.user_ids.get(id.as_str()).filter(|u| ix.user(*u).is_some()).ok_or(Code::DenyInvalidTarget);
        let device_of =
            |id: &Id| ix.dev_ids.get(id.as_str()).filter(|d| ix.device(*d).is_some()).ok_or(Code::DenyInvalidTarget);
        // `DENY_NO_PERMISSION` naming the permission and the org it is needed in.
        let require = |o: OrgSlot, p: Permission| -> Denied<()> {
            if self.permissions_in_slots(a, o).has(p) {
                return Ok(());
            }
            Err(Deny { org: Some(o), permission: Some(p), ..Code::DenyNoPermission.into() })
        };
        // `DENY_ESCALATION` naming the permissions beyond the actor's in `o`.
        let within = |o: OrgSlot, perms: Perms| -> Denied<()> {
            let beyond = perms.without(self.permissions_in_slots(a, o));
            if beyond.is_empty() {
                return Ok(());
            }
            Err(Deny { org: Some(o), beyond, ..Code::DenyEscalation.into() })
        };

        match command {
            Command::CreateOrg { id, name, parent } => {
                let p = org_of(parent)?;
                require(p, Permission::OrgsCreate)?;
                need(self.root_plan(p) == Plan::Pro, Code::DenyPlan)?;
                need(self.viewer.is_some() || ix.der(p).depth < MAX_DEPTH, Code::DenyDepth)?;
                need(ix.org_ids.get(id.as_str()).is_none_or(|o| !ix.org_present(o)), Code::DenyInvalidTarget)?;
                Ok(vec![Op::PutOrg {
                    org: OrgDoc {
                        id: id.clone(),
                        name: name.clone(),
                        parent: Some(parent.clone()),
                        plan: Plan::Pro,
                        suspended: false,
                        roles: None,
                    },
                }])
            }
            Command::Invite { email, org, role, user_id } => {
                let o = org_of(org)?;
                require(o, Permission::UsersInvite)?;
                let perms = ix.role_perms(o, role.as_str()).ok_or(Code::DenyInvalidTarget)?;
                need(!self.email_in_use(email), Code::DenyInvalidTarget)?;
                let uid = match user_id {
                    Some(id) => id.clone(),
                    None if preview => Id::trusted(PLACEHOLDER_USER_ID.to_owned()),
                    None => return Err(Code::DenyInvalidTarget.into()),
                };
                need(ix.user_ids.get(uid.as_str()).is_none_or(|u| ix.user(u).is_none()), Code::DenyInvalidTarget)?;
                within(o, perms)?;
                let name = email.split('@').next().unwrap_or(email).to_owned();
                Ok(vec![
                    Op::PutUser {
                        user: UserDoc { id: uid.clone(), email: email.clone(), name, status: Status::Pending },
                    },
                    Op::PutMembership { membership: MembershipDoc { user: uid, org: org.clone(), role: role.clone() } },
                ])
            }
            Command::SetRole { user, org, role } => {
                let u = user_of(user)?;
                let o = org_of(org)?;
                require(o, Permission::UsersEdit)?;
                let current = ix.mem(u, o).ok_or(Code::DenyInvalidTarget)?;
                let perms = ix.role_perms(o, role.as_str()).ok_or(Code::DenyInvalidTarget)?;
                within(o, perms.union(current.perms))?;
                if current.role.as_str() == ADMIN_ROLE && role.as_str() != ADMIN_ROLE {
                    need(!self.is_last_root_admin(u, o), Code::DenyLastAdmin)?;
                }
                Ok(vec![Op::PutMembership {
                    membership: MembershipDoc { user: user.clone(), org: org.clone(), role: role.clone() },
                }])
            }
            Command::RemoveMember { user, org } => {
                let u = user_of(user)?;
                let o = org_of(org)?;
                require(o, Permission::UsersRemove)?;
                let current = ix.mem(u, o).ok_or(Code::DenyInvalidTarget)?;
                within(o, current.perms)?;
                need(!self.is_last_root_admin(u, o), Code::DenyLastAdmin)?;
                let mut ops: Vec<Op> = self
                    .owned_in(u, o)
                    .into_iter()
                    .filter_map(|d| self.device_doc(d))
                    .map(|mut device| {
                        device.owner = None;
                        Op::PutDevice { device }
                    })
                    .collect();
                ops.push(Op::RemoveMembership { user: user.clone(), org: org.clone() });
                Ok(ops)
            }
            Command::SuspendUser { user } | Command::ReactivateUser { user } => {
                let suspend = matches!(command, Command::SuspendUser { .. });
                let u = user_of(user)?;
                let mems = ix.mems(u);
                if mems.is_empty() {
                    // Nobody holds authority over a user without memberships.
                    return Err(Deny { permission: Some(Permission::UsersSuspend), ..Code::DenyNoPermission.into() });
                }
                for m in mems {
                    require(m.org, Permission::UsersSuspend)?;
                }
                let status = ix.user(u).map(|r| r.status);
                if suspend {
                    need(status != Some(Status::Suspended), Code::DenyInvalidTarget)?;
                } else {
                    need(status == Some(Status::Suspended), Code::DenyInvalidTarget)?;
                }
                for m in mems {
                    within(m.org, m.perms)?;
                }
                if suspend {
                    need(!mems.iter().any(|m| self.is_last_root_admin(u, m.org)), Code::DenyLastAdmin)?;
                }
                let mut doc = self.user_doc(u).ok_or(Code::DenyInvalidTarget)?;
                doc.status = if suspend { Status::Suspended } else { Status::Active };
                Ok(vec![Op::PutUser { user: doc }])
            }
            Command::AddDevice { id, name, org, owner } => {
                let o = org_of(org)?;
                let owner_slot = owner.as_ref().map(user_of).transpose()?;
                require(o, Permission::DevicesAdd)?;
                need(ix.dev_ids.get(id.as_str()).is_none_or(|d| ix.device(d).is_none()), Code::DenyInvalidTarget)?;
                if let Some(w) = owner_slot {
                    need(self.active_member(w, o), Code::DenyInvalidTarget)?;
                }
                Ok(vec![Op::PutDevice {
                    device: DeviceDoc { id: id.clone(), name: name.clone(), org: org.clone(), owner: owner.clone() },
                }])
            }
            Command::TransferDevice { device, owner, org } => {
                let d = device_of(device)?;
                let w = user_of(owner)?;
                let target = match org {
                    Some(org) => org_of(org)?,
                    None => self.sole_reachable_membership(a, w).ok_or(Code::DenyInvalidTarget)?,
                };
                let from = ix.device(d).map(|x| x.org).ok_or(Code::DenyInvalidTarget)?;
                require(from, Permission::DevicesTransfer)?;
                require(target, Permission::DevicesTransfer)?;
                need(self.same_tree(from, target), Code::DenyInvalidTarget)?;
                need(self.active_member(w, target), Code::DenyInvalidTarget)?;
                let mut doc = self.device_doc(d).ok_or(Code::DenyInvalidTarget)?;
                doc.org = Id::trusted(ix.org_name(target).to_owned());
                doc.owner = Some(owner.clone());
                Ok(vec![Op::PutDevice { device: doc }])
            }
            Command::MoveDevice { device, org } => {
                let d = device_of(device)?;
                let target = org_of(org)?;
                let dev = ix.device(d).ok_or(Code::DenyInvalidTarget)?;
                require(dev.org, Permission::DevicesTransfer)?;
                require(target, Permission::DevicesTransfer)?;
                need(self.same_tree(dev.org, target), Code::DenyInvalidTarget)?;
                let mut doc = self.device_doc(d).ok_or(Code::DenyInvalidTarget)?;
                doc.org = org.clone();
                if dev.owner.is_some_and(|w| ix.mem(w, target).is_none()) {
                    doc.owner = None;
                }
                Ok(vec![Op::PutDevice { device: doc }])
            }
            Command::RemoveDevice { device } => {
                let d = device_of(device)?;
                let o = ix.device(d).map(|x| x.org).ok_or(Code::DenyInvalidTarget)?;
                require(o, Permission::DevicesRemove)?;
                Ok(vec![Op::RemoveDevice { id: device.clone() }])
            }
            Command::SetRolePermissions { org, role, permissions } => {
                let o = org_of(org)?;
                require(o, Permission::RolesEdit)?;
                need(self.root_plan(o) == Plan::Pro, Code::DenyPlan)?;
                need(role.as_str() != ADMIN_ROLE, Code::DenyInvalidTarget)?;
                let perms = Perms::parse_list(permissions).map_err(|_| Code::DenyInvalidTarget)?;
                within(o, perms)?;
                let mut doc = self.org_doc(o).ok_or(Code::DenyInvalidTarget)?;
                let mut table = doc.roles.take().unwrap_or_default();
                table.insert(role.clone(), perms.names().into_iter().map(str::to_owned).collect());
                doc.roles = Some(table);
                Ok(vec![Op::PutOrg { org: doc }])
            }
            Command::SuspendOrg { org } | Command::ResumeOrg { org } | Command::DeleteOrg { org } => {
                let o = org_of(org)?;
                // A root has no parent to hold `orgs.edit` in: it is never a valid target.
                let parent = ix.org(o).and_then(|r| r.parent).ok_or(Code::DenyInvalidTarget)?;
                require(parent, Permission::OrgsEdit)?;
                if let Command::DeleteOrg { .. } = command {
                    self.check_empty(o)?;
                    return Ok(vec![Op::RemoveOrg { id: org.clone() }]);
                }
                let mut doc = self.org_doc(o).ok_or(Code::DenyInvalidTarget)?;
                doc.suspended = matches!(command, Command::SuspendOrg { .. });
                Ok(vec![Op::PutOrg { org: doc }])
            }
            Command::ClaimDevice { device, org, .. } => {
                let d = device_of(device)?;
                let o = org_of(org)?;
                if ix.mem(a, o).is_none() || ix.der(o).eff_suspended {
                    // No permission is needed, only an active membership in `org`.
                    return Err(Deny { org: Some(o), ..Code::DenyNoPermission.into() });
                }
                let dev = ix.device(d).ok_or(Code::DenyInvalidTarget)?;
                need(dev.owner.is_none(), Code::DenyInvalidTarget)?;
                need(self.same_tree(dev.org, o), Code::DenyInvalidTarget)?;
                let mut doc = self.device_doc(d).ok_or(Code::DenyInvalidTarget)?;
                doc.org = org.clone();
                doc.owner = Some(Id::trusted(actor.to_owned()));
                Ok(vec![Op::PutDevice { device: doc }])
            }
        }
    }

    /// `DENY_NOT_EMPTY` unless `o` has no devices, members or sub-orgs; the denial names the
    /// first (by id) device, else member, else sub-org.
    fn check_empty(&self, o: OrgSlot) -> Denied<()> {
        let ix = &self.ix;
        let deny = Deny::from(Code::DenyNotEmpty);
        let device = ix.devices_of_org(o).iter().copied().min_by(|x, y| ix.dev_ids.cmp(*x, *y));
        let user = ix.members_of_org(o).iter().copied().min_by(|x, y| ix.user_ids.cmp(*x, *y));
        let children = ix.subtree(o).iter().copied().filter(|&c| c != o && ix.org(c).and_then(|r| r.parent) == Some(o));
        let child = children.min_by(|x, y| ix.org_ids.cmp(*x, *y));
        match (device, user, child) {
            (Some(d), _, _) => Err(Deny { device: Some(d), ..deny }),
            (None, Some(u), _) => Err(Deny { user: Some(u), ..deny }),
            (None, None, Some(c)) => Err(Deny { org: Some(c), ..deny }),
            (None, None, None) => Ok(()),
        }
    }

    fn root_plan(&self, o: OrgSlot) -> Plan {
        self.ix.org(self.ix.der(o).root).map_or(Plan::Pro, |r| r.plan)
    }

    /// Whether some user already has this email (compared case-insensitively).
    pub fn email_in_use(&self, email: &str) -> bool {
        self.user_slot_by_email(email).is_some()
    }

    fn active_member(&self, u: UserSlot, o: OrgSlot) -> bool {
        self.ix.mem(u, o).is_some() && self.ix.is_active(u)
    }

    fn owned_in(&self, u: UserSlot, o: OrgSlot) -> Vec<DeviceSlot> {
        self.ix.owned_by(u).iter().copied().filter(|d| self.ix.device(*d).is_some_and(|x| x.org == o)).collect()
    }

    /// The org of `w`'s only membership within the actor's reach, if exactly one.
    fn sole_reachable_membership(&self, a: UserSlot, w: UserSlot) -> Option<OrgSlot> {
        let ix = &self.ix;
        let mut found =
            ix.mems(w).iter().map(|m| m.org).filter(|o| ix.mems(a).iter().any(|am| crate::decide::reaches(ix, am, *o)));
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }

    /// Whether two orgs are in the same tree. A projection (SPEC §4.3) does not say which of its
    /// roots were real roots, so there it cannot tell and does not deny: the server decides.
    fn same_tree(&self, a: OrgSlot, b: OrgSlot) -> bool {
        self.viewer.is_some() || self.ix.der(a).root == self.ix.der(b).root
    }

    /// Whether `u` is the last active Admin of `o`, when `o` is a root org. On a projection a
    /// root may be a cut-off sub-org, so the rule is left to the server (see `same_tree`).
    fn is_last_root_admin(&self, u: UserSlot, o: OrgSlot) -> bool {
        let ix = &self.ix;
        let is_root = self.viewer.is_none() && ix.org(o).is_some_and(|r| r.parent.is_none());
        let active_admin = |x: UserSlot| ix.is_active(x) && ix.mem(x, o).is_some_and(|m| m.role.as_str() == ADMIN_ROLE);
        is_root && active_admin(u) && !ix.members_of_org(o).iter().any(|&x| x != u && active_admin(x))
    }
}
