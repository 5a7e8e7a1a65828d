//! The rules the authority (the server, SPEC §7 and §7.1) applies around commands, kept here so
//! that no policy lives in the server crate: who may sign in, which org a command is about,
//! whose sessions a change ends, which invitations and claim codes it voids, what an audit
//! reader may see, and the delta that accepts an invitation.

use crate::command::Command;
use crate::delta::{Delta, Op};
use crate::engine::Engine;
use crate::model::{Permission, Status};

/// Why an invitation cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptRefusal {
    /// The invited user no longer exists.
    UnknownUser,
    /// The invited user is no longer pending (already accepted, or suspended).
    NotPending,
}

impl Engine {
    /// Whether `user` may sign in: an existing, active user (SPEC §1: `pending` users accept an
    /// invitation first, `suspended` ones are locked out).
    pub fn may_sign_in(&self, user: &str) -> bool {
        self.user_doc_by_id(user).is_some_and(|u| u.status == Status::Active)
    }

    /// The org a command is about, for the audit trail: the org it names (or the org of the
    /// device it names), but only when the actor reaches that org with at least one permission,
    /// or the command was allowed. A denied command naming an org the actor has nothing in is
    /// about no org, so nobody can write into another tenant's audit view by naming its org.
    pub fn command_subject_org(&self, actor: &str, command: &Command, allowed: bool) -> Option<String> {
        let named = match command {
            Command::CreateOrg { parent, .. } => Some(parent.to_string()),
            Command::Invite { org, .. }
            | Command::SetRole { org, .. }
            | Command::RemoveMember { org, .. }
            | Command::AddDevice { org, .. }
            | Command::SetRolePermissions { org, .. } => Some(org.to_string()),
            Command::SuspendOrg { org } | Command::ResumeOrg { org } | Command::DeleteOrg { org } => {
                self.org_doc_by_id(org.as_str()).and_then(|o| o.parent.map(|p| p.to_string()))
            }
            Command::TransferDevice { device, .. }
            | Command::MoveDevice { device, .. }
            | Command::RemoveDevice { device }
            | Command::ClaimDevice { device, .. } => self.device_doc_by_id(device.as_str()).map(|d| d.org.to_string()),
            Command::SuspendUser { user } | Command::ReactivateUser { user } => {
                self.memberships_of(user.as_str()).into_iter().next().map(|(org, _)| org)
            }
        }?;
        let reaches = allowed
            || self.permissions_in(actor, &named) != crate::model::Perms::default()
            || self.is_member(actor, &named);
        reaches.then_some(named)
    }

    /// The org a device command (`POST /api/devices/{id}/commands`) is about: the device's org.
    pub fn device_subject_org(&self, device: &str) -> Option<String> {
        self.device_doc_by_id(device).map(|d| d.org.to_string())
    }

    /// Whether `user` holds a membership in `org`.
    pub fn is_member(&self, user: &str, org: &str) -> bool {
        self.membership_doc_by_id(user, org).is_some()
    }

    /// The users whose sessions end because `delta` was applied (SPEC §7.1): suspended, removed,
    /// or left without any membership. Call on the engine *after* the delta.
    pub fn users_signed_out_by(&self, delta: &Delta) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for op in &delta.ops {
            let user = match op {
                Op::PutUser { user } if user.status != Status::Active => Some(user.id.as_str()),
                Op::RemoveUser { id } => Some(id.as_str()),
                Op::RemoveMembership { user, .. } => Some(user.as_str()),
                _ => None,
            };
            let Some(user) = user else { continue };
            let ends = match self.user_doc_by_id(user) {
                None => true,
                Some(u) => u.status != Status::Active || self.memberships_of(user).is_empty(),
            };
            if ends && !out.iter().any(|u| u == user) {
                out.push(user.to_owned());
            }
        }
        out
    }

    /// The pending memberships whose invitation `delta` revokes: a `removeMember` of a pending
    /// member. Call on the engine *before* the delta. Returns `(user, org)` pairs.
    pub fn invitations_revoked_by(&self, delta: &Delta) -> Vec<(String, String)> {
        delta
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::RemoveMembership { user, org }
                    if self.user_doc_by_id(user.as_str()).is_some_and(|u| u.status == Status::Pending) =>
                {
                    Some((user.to_string(), org.to_string()))
                }
                Op::RemoveUser { id } => Some((id.to_string(), String::new())),
                _ => None,
            })
            .collect()
    }

    /// The delta that accepts the invitation of pending user `user`: the user becomes active.
    pub fn accept_invite_delta(&self, user: &str) -> std::result::Result<Delta, AcceptRefusal> {
        let mut doc = self.user_doc_by_id(user).ok_or(AcceptRefusal::UnknownUser)?;
        if doc.status != Status::Pending {
            return Err(AcceptRefusal::NotPending);
        }
        doc.status = Status::Active;
        Ok(Delta::new(self.revision(), self.revision().saturating_add(1), vec![Op::PutUser { user: doc }]))
    }

    /// Whether `viewer` may read audit entries about `org` (SPEC §7.1: `users.view` there).
    pub fn may_read_audit(&self, viewer: &str, org: &str) -> bool {
        self.permissions_in(viewer, org).has(Permission::UsersView)
    }

    /// The orgs whose audit entries `viewer` may read, ascending.
    pub fn audit_orgs(&self, viewer: &str) -> Vec<&str> {
        self.switchable_orgs(viewer).into_iter().filter(|o| self.may_read_audit(viewer, o)).collect()
    }

    /// The orgs whose outbox (invitation messages) `viewer` may read: those it may invite into.
    pub fn outbox_orgs(&self, viewer: &str) -> Vec<&str> {
        self.switchable_orgs(viewer)
            .into_iter()
            .filter(|o| self.permissions_in(viewer, o).has(Permission::UsersInvite))
            .collect()
    }

    /// Whether an id named in an audit entry is one `viewer`'s projection (SPEC §4.3) shows: a
    /// projected org, a device the viewer can view, the viewer, or a member of an org in which
    /// the viewer holds `users.view`. Anything else is hidden from the viewer's audit view.
    pub fn audit_shows(&self, viewer: &str, id: &str) -> bool {
        if id == viewer || self.can_view(viewer, id) {
            return true;
        }
        if self.org_doc_by_id(id).is_some() {
            return self.is_switchable(viewer, id) || self.is_member(viewer, id);
        }
        self.memberships_of(id).iter().any(|(org, _)| self.may_read_audit(viewer, org))
    }
}

/// The devices whose claim codes `delta` voids: a device that gets an owner or is removed can
/// no longer be claimed with its old code (an unowned device moved within its tree keeps it).
pub fn claim_codes_voided_by(delta: &Delta) -> Vec<String> {
    delta
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::PutDevice { device } if device.owner.is_some() => Some(device.id.to_string()),
            Op::RemoveDevice { id } => Some(id.to_string()),
            _ => None,
        })
        .collect()
}

/// A command as the audit trail keeps it: secrets (claim codes) removed, and at most
/// `AUDIT_DETAIL_BYTES` of JSON (a larger one keeps only its `op`).
pub fn audit_command_detail(command: &Command) -> serde_json::Value {
    let mut value = serde_json::to_value(command).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.remove("code");
    }
    if value.to_string().len() > AUDIT_DETAIL_BYTES {
        return serde_json::json!({"op": command.op(), "truncated": true});
    }
    value
}

/// The most JSON an audit entry's detail keeps.
pub const AUDIT_DETAIL_BYTES: usize = 2048;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::snapshot::Id;

    fn world() -> Engine {
        Engine::from_json(
            r#"{"format":"fleetgate/snapshot@1","revision":3,
            "orgs":[{"id":"a","name":"A","parent":null},{"id":"b","name":"B","parent":null}],
            "users":[{"id":"ann","email":"ann@a.test","name":"Ann","status":"active"},
                     {"id":"bob","email":"bob@b.test","name":"Bob","status":"active"},
                     {"id":"pat","email":"pat@a.test","name":"Pat","status":"pending"}],
            "memberships":[{"user":"ann","org":"a","role":"Admin"},{"user":"bob","org":"b","role":"Admin"},
                           {"user":"pat","org":"a","role":"User"}],
            "devices":[{"id":"d1","name":"D","org":"a","owner":null}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn subject_org_needs_reach_unless_allowed() {
        let e = world();
        let cmd = Command::parse(r#"{"op":"addDevice","id":"x","name":"X","org":"a","owner":null}"#).unwrap();
        assert_eq!(e.command_subject_org("ann", &cmd, false).as_deref(), Some("a"));
        assert_eq!(e.command_subject_org("bob", &cmd, false), None);
    }

    #[test]
    fn sessions_end_on_suspension_and_last_membership() {
        let mut e = world();
        let delta =
            Delta::new(3, 4, vec![Op::RemoveMembership { user: Id::new("bob").unwrap(), org: Id::new("b").unwrap() }]);
        e.apply_delta(&delta).unwrap();
        assert_eq!(e.users_signed_out_by(&delta), vec!["bob".to_owned()]);
    }

    #[test]
    fn pending_removal_revokes_and_accept_activates() {
        let e = world();
        let d =
            Delta::new(3, 4, vec![Op::RemoveMembership { user: Id::new("pat").unwrap(), org: Id::new("a").unwrap() }]);
        assert_eq!(e.invitations_revoked_by(&d), vec![("pat".to_owned(), "a".to_owned())]);
        assert!(e.accept_invite_delta("pat").is_ok());
        assert_eq!(e.accept_invite_delta("ann"), Err(AcceptRefusal::NotPending));
        assert!(!e.may_sign_in("pat"));
    }

    #[test]
    fn audit_visibility_follows_the_projection() {
        let e = world();
        assert!(e.audit_shows("ann", "d1"));
        assert!(e.audit_shows("ann", "pat"));
        assert!(!e.audit_shows("ann", "bob"));
        assert!(!e.audit_shows("ann", "b"));
        assert_eq!(e.audit_orgs("ann"), vec!["a"]);
        let claim = Command::parse(r#"{"op":"claimDevice","device":"d1","code":"SECRET","org":"a"}"#).unwrap();
        assert!(audit_command_detail(&claim).get("code").is_none());
    }
}
