//! Commands of SPEC §5: strict parsing, decisions (with the no-escalation and last-admin
//! rules) and the delta an allowed command causes. `decide` and `apply` share one code path,
//! so they cannot disagree.

use serde::{Deserialize, Deserializer, Serialize};

use crate::decide::{Code, Decision};
use crate::delta::{Delta, Op};
use crate::engine::Engine;
use crate::error::{Error, ErrorCode, Result};
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
            Err(code) => Outcome { decision: Decision::of(code), ops: Vec::new() },
        }
    }

    fn evaluate_steps(&self, actor: &str, command: &Command, preview: bool) -> Step<Vec<Op>> {
        let ix = &self.ix;
        let a = ix.user_ids.get(actor).filter(|u| ix.user(*u).is_some()).ok_or(Code::DenyUnknownUser)?;
        need(ix.user(a).is_some_and(|r| r.status == Status::Active), Code::DenyUserInactive)?;
        let org_of =
            |id: &Id| ix.org_ids.get(id.as_str()).filter(|o| ix.org_present(*o)).ok_or(Code::DenyInvalidTarget);
        let user_of =
            |id: &Id| ix.user_ids.get(id.as_str()).filter(|u| ix.user(*u).is_some()).ok_or(Code::DenyInvalidTarget);
        let device_of =
            |id: &Id| ix.dev_ids.get(id.as_str()).filter(|d| ix.device(*d).is_some()).ok_or(Code::DenyInvalidTarget);
        let has = |o: u32, p: Permission| self.permissions_in_slots(a, o).has(p);
        let within = |o: u32, perms: Perms| perms.is_subset_of(self.permissions_in_slots(a, o));

        match command {
            Command::CreateOrg { id, name, parent } => {
                let p = org_of(parent)?;
                need(has(p, Permission::OrgsCreate), Code::DenyNoPermission)?;
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
                need(has(o, Permission::UsersInvite), Code::DenyNoPermission)?;
                let perms = ix.role_perms(o, role.as_str()).ok_or(Code::DenyInvalidTarget)?;
                need(!self.email_in_use(email), Code::DenyInvalidTarget)?;
                let uid = match user_id {
                    Some(id) => id.clone(),
                    None if preview => Id::trusted(PLACEHOLDER_USER_ID.to_owned()),
                    None => return Err(Code::DenyInvalidTarget),
                };
                need(ix.user_ids.get(uid.as_str()).is_none_or(|u| ix.user(u).is_none()), Code::DenyInvalidTarget)?;
                need(within(o, perms), Code::DenyEscalation)?;
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
                need(has(o, Permission::UsersEdit), Code::DenyNoPermission)?;
                let current = ix.mem(u, o).ok_or(Code::DenyInvalidTarget)?;
                let perms = ix.role_perms(o, role.as_str()).ok_or(Code::DenyInvalidTarget)?;
                need(within(o, perms) && within(o, current.perms), Code::DenyEscalation)?;
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
                need(has(o, Permission::UsersRemove), Code::DenyNoPermission)?;
                let current = ix.mem(u, o).ok_or(Code::DenyInvalidTarget)?;
                need(within(o, current.perms), Code::DenyEscalation)?;
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
                need(
                    !mems.is_empty() && mems.iter().all(|m| has(m.org, Permission::UsersSuspend)),
                    Code::DenyNoPermission,
                )?;
                let status = ix.user(u).map(|r| r.status);
                if suspend {
                    need(status != Some(Status::Suspended), Code::DenyInvalidTarget)?;
                } else {
                    need(status == Some(Status::Suspended), Code::DenyInvalidTarget)?;
                }
                need(mems.iter().all(|m| within(m.org, m.perms)), Code::DenyEscalation)?;
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
                need(has(o, Permission::DevicesAdd), Code::DenyNoPermission)?;
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
                need(
                    has(from, Permission::DevicesTransfer) && has(target, Permission::DevicesTransfer),
                    Code::DenyNoPermission,
                )?;
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
                need(
                    has(dev.org, Permission::DevicesTransfer) && has(target, Permission::DevicesTransfer),
                    Code::DenyNoPermission,
                )?;
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
                need(has(o, Permission::DevicesRemove), Code::DenyNoPermission)?;
                Ok(vec![Op::RemoveDevice { id: device.clone() }])
            }
            Command::SetRolePermissions { org, role, permissions } => {
                let o = org_of(org)?;
                need(has(o, Permission::RolesEdit), Code::DenyNoPermission)?;
                need(self.root_plan(o) == Plan::Pro, Code::DenyPlan)?;
                need(role.as_str() != ADMIN_ROLE, Code::DenyInvalidTarget)?;
                let perms = Perms::parse_list(permissions).map_err(|_| Code::DenyInvalidTarget)?;
                need(within(o, perms), Code::DenyEscalation)?;
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
                need(has(parent, Permission::OrgsEdit), Code::DenyNoPermission)?;
                if let Command::DeleteOrg { .. } = command {
                    let empty =
                        ix.devices_of_org(o).is_empty() && ix.members_of_org(o).is_empty() && ix.subtree(o).len() <= 1;
                    need(empty, Code::DenyNotEmpty)?;
                    return Ok(vec![Op::RemoveOrg { id: org.clone() }]);
                }
                let mut doc = self.org_doc(o).ok_or(Code::DenyInvalidTarget)?;
                doc.suspended = matches!(command, Command::SuspendOrg { .. });
                Ok(vec![Op::PutOrg { org: doc }])
            }
            Command::ClaimDevice { device, org, .. } => {
                let d = device_of(device)?;
                let o = org_of(org)?;
                need(ix.mem(a, o).is_some() && !ix.der(o).eff_suspended, Code::DenyNoPermission)?;
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

    fn root_plan(&self, o: u32) -> Plan {
        self.ix.org(self.ix.der(o).root).map_or(Plan::Pro, |r| r.plan)
    }

    /// Whether some user already has this email (compared case-insensitively).
    pub fn email_in_use(&self, email: &str) -> bool {
        self.user_slot_by_email(email).is_some()
    }

    fn active_member(&self, u: u32, o: u32) -> bool {
        self.ix.mem(u, o).is_some() && self.ix.user(u).is_some_and(|r| r.status == Status::Active)
    }

    fn owned_in(&self, u: u32, o: u32) -> Vec<u32> {
        self.ix.owned_by(u).iter().copied().filter(|d| self.ix.device(*d).is_some_and(|x| x.org == o)).collect()
    }

    /// The org of `w`'s only membership within the actor's reach, if exactly one.
    fn sole_reachable_membership(&self, a: u32, w: u32) -> Option<u32> {
        let ix = &self.ix;
        let mut found =
            ix.mems(w).iter().map(|m| m.org).filter(|o| ix.mems(a).iter().any(|am| crate::decide::reaches(ix, am, *o)));
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }

    /// Whether two orgs are in the same tree. A projection (SPEC §4.3) does not say which of its
    /// roots were real roots, so there it cannot tell and does not deny: the server decides.
    fn same_tree(&self, a: u32, b: u32) -> bool {
        self.viewer.is_some() || self.ix.der(a).root == self.ix.der(b).root
    }

    /// Whether `u` is the last active Admin of `o`, when `o` is a root org. On a projection a
    /// root may be a cut-off sub-org, so the rule is left to the server (see `same_tree`).
    fn is_last_root_admin(&self, u: u32, o: u32) -> bool {
        let ix = &self.ix;
        let is_root = self.viewer.is_none() && ix.org(o).is_some_and(|r| r.parent.is_none());
        let active_admin = |x: u32| {
            ix.user(x).is_some_and(|r| r.status == Status::Active)
                && ix.mem(x, o).is_some_and(|m| m.role.as_str() == ADMIN_ROLE)
        };
        is_root && active_admin(u) && !ix.members_of_org(o).iter().any(|&x| x != u && active_admin(x))
    }
}
