//! Previews of commands: who gains and who loses view/control of which device. Computed from
//! what the command touches (the device's org chains, the affected subtree, the role's holders),
//! by applying the command's delta in place, evaluating, and reverting exactly.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::command::Command;
use crate::decide::Decision;
use crate::delta::Op;
use crate::engine::{Change, Engine};
use crate::model::Action;

/// How many entries of `gained` and of `lost` a preview lists before it truncates.
pub const PREVIEW_LIMIT: usize = 1000;

/// One (user, device, action) access.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Access {
    /// The user.
    pub user: String,
    /// The device.
    pub device: String,
    /// `view` or `control`.
    pub action: Action,
}

/// The result of `preview`: the decision, and the accesses it would grant and revoke, sorted by
/// user, device, then action (view before control).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    /// The decision (`decide`).
    pub decision: Decision,
    /// Accesses the command grants (at most `PREVIEW_LIMIT`).
    pub gained: Vec<Access>,
    /// Accesses the command revokes (at most `PREVIEW_LIMIT`).
    pub lost: Vec<Access>,
    /// Set when a list was cut at `PREVIEW_LIMIT`; the counts then give the totals.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Total number of gained accesses (only when truncated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gained_count: Option<usize>,
    /// Total number of lost accesses (only when truncated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_count: Option<usize>,
}

/// Which accesses a command can change.
enum Scope {
    /// Only these devices, for these users.
    Devices { users: Vec<String>, devices: Vec<String> },
    /// Anything these users see.
    Users(Vec<String>),
}

/// The accesses (user, device, action) held within a scope at one moment: taken before and
/// after a command, their differences are what it gains and loses.
type AccessSet = BTreeSet<Access>;

impl Engine {
    /// Previews a command: its decision, and who would gain or lose access to what. The engine
    /// is left exactly as it was.
    pub fn preview(&mut self, actor: &str, command: &Command) -> Preview {
        let outcome = self.evaluate(actor, command, true);
        let mut preview = Preview {
            decision: outcome.decision,
            gained: Vec::new(),
            lost: Vec::new(),
            truncated: false,
            gained_count: None,
            lost_count: None,
        };
        if !preview.decision.allowed {
            return preview;
        }
        let scope = self.scope(command, &outcome.ops);
        let before = self.accesses(&scope);
        let changes: Vec<Change<'_>> = outcome.ops.iter().map(Op::change).collect();
        let Ok(after) = self.with_changes(&changes, |e| e.accesses(&scope)) else { return preview };
        let gained: Vec<Access> = after.difference(&before).cloned().collect();
        let lost: Vec<Access> = before.difference(&after).cloned().collect();
        if gained.len() > PREVIEW_LIMIT || lost.len() > PREVIEW_LIMIT {
            preview.truncated = true;
            preview.gained_count = Some(gained.len());
            preview.lost_count = Some(lost.len());
        }
        preview.gained = gained.into_iter().take(PREVIEW_LIMIT).collect();
        preview.lost = lost.into_iter().take(PREVIEW_LIMIT).collect();
        preview
    }

    /// The members of `org` and of its ancestors: everyone whose grants can reach a device there.
    fn chain_members(&self, org: &str, out: &mut Vec<String>) {
        let ix = &self.ix;
        let mut cur = ix.org_ids.get(org).filter(|o| ix.org_present(*o));
        while let Some(o) = cur {
            out.extend(ix.members_of_org(o).iter().map(|u| ix.user_name(*u).to_owned()));
            cur = ix.org(o).and_then(|r| r.parent);
        }
    }

    fn device_org(&self, device: &str) -> Option<&str> {
        let ix = &self.ix;
        ix.dev_ids.get(device).and_then(|d| ix.device(d)).map(|d| ix.org_name(d.org))
    }

    fn scope(&self, command: &Command, ops: &[Op]) -> Scope {
        let ix = &self.ix;
        let mut users = Vec::new();
        match command {
            Command::AddDevice { id, org, .. } => {
                self.chain_members(org.as_str(), &mut users);
                Scope::Devices { users, devices: vec![id.to_string()] }
            }
            Command::TransferDevice { device, .. }
            | Command::MoveDevice { device, .. }
            | Command::RemoveDevice { device }
            | Command::ClaimDevice { device, .. } => {
                if let Some(org) = self.device_org(device.as_str()) {
                    self.chain_members(org, &mut users);
                }
                for op in ops {
                    if let Op::PutDevice { device } = op {
                        self.chain_members(device.org.as_str(), &mut users);
                    }
                }
                if let Command::ClaimDevice { .. } = command {
                    for op in ops {
                        if let Op::PutDevice { device: d } = op {
                            users.extend(d.owner.iter().map(ToString::to_string));
                        }
                    }
                }
                Scope::Devices { users, devices: vec![device.to_string()] }
            }
            Command::SetRole { user, .. }
            | Command::RemoveMember { user, .. }
            | Command::SuspendUser { user }
            | Command::ReactivateUser { user } => Scope::Users(vec![user.to_string()]),
            Command::SetRolePermissions { org, role, .. } => {
                if let Some(o) = ix.org_ids.get(org.as_str()) {
                    for &x in ix.subtree(o) {
                        for &u in ix.members_of_org(x) {
                            if ix.mem(u, x).is_some_and(|m| m.role == *role) {
                                users.push(ix.user_name(u).to_owned());
                            }
                        }
                    }
                }
                Scope::Users(users)
            }
            Command::SuspendOrg { org } | Command::ResumeOrg { org } => {
                self.chain_members(org.as_str(), &mut users);
                if let Some(o) = ix.org_ids.get(org.as_str()) {
                    for &x in ix.subtree(o) {
                        users.extend(ix.members_of_org(x).iter().map(|u| ix.user_name(*u).to_owned()));
                    }
                }
                Scope::Users(users)
            }
            Command::CreateOrg { .. } | Command::DeleteOrg { .. } | Command::Invite { .. } => Scope::Users(users),
        }
    }

    fn accesses(&self, scope: &Scope) -> AccessSet {
        let mut out = AccessSet::new();
        let actions = [Action::View, Action::Control];
        match scope {
            Scope::Devices { users, devices } => {
                for u in users {
                    for d in devices {
                        for action in actions {
                            if self.can(u, d, action) {
                                out.insert(Access { user: u.clone(), device: d.clone(), action });
                            }
                        }
                    }
                }
            }
            Scope::Users(users) => {
                for u in users {
                    for action in actions {
                        let Ok(list) = self.visible_slots(u, action, None) else { continue };
                        out.extend(list.into_iter().map(|d| Access {
                            user: u.clone(),
                            device: self.ix.device_name(d).to_owned(),
                            action,
                        }));
                    }
                }
            }
        }
        out
    }
}
