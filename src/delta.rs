//! Deltas of SPEC §4.2: facts that move a snapshot from revision `from` to `to`, applied atomically.

use serde::{Deserialize, Deserializer, Serialize};

use crate::engine::{Change, Engine};
use crate::error::{Error, ErrorCode, Result};
use crate::snapshot::{DeviceDoc, Id, MembershipDoc, OrgDoc, SafeInt, UserDoc};
use crate::tagged::Fields;

/// The `format` of a delta.
pub const DELTA_FORMAT: &str = "fleetgate/delta@1";

/// One fact of a delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    /// Insert or replace an org.
    PutOrg {
        /// The org.
        org: OrgDoc,
    },
    /// Insert or replace a user.
    PutUser {
        /// The user.
        user: UserDoc,
    },
    /// Insert or replace a membership (by user and org).
    PutMembership {
        /// The membership.
        membership: MembershipDoc,
    },
    /// Insert or replace a device.
    PutDevice {
        /// The device.
        device: DeviceDoc,
    },
    /// Remove an org.
    RemoveOrg {
        /// Its id.
        id: Id,
    },
    /// Remove a user.
    RemoveUser {
        /// Its id.
        id: Id,
    },
    /// Remove a device.
    RemoveDevice {
        /// Its id.
        id: Id,
    },
    /// Remove a membership.
    RemoveMembership {
        /// The member.
        user: Id,
        /// The org.
        org: Id,
    },
}

/// A delta document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields, expecting = "a delta object")]
pub struct Delta {
    /// Always `fleetgate/delta@1`.
    pub format: String,
    /// The revision it applies to.
    pub from: SafeInt,
    /// The revision it produces: `> from`, or `= from` for a renewal (no ops).
    pub to: SafeInt,
    /// Unix seconds when it was issued (signed deltas, SPEC §4.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<SafeInt>,
    /// Unix seconds after which the state it produces must not be used (signed deltas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<SafeInt>,
    /// The facts, applied in order and checked as a whole.
    #[serde(deserialize_with = "read_ops")]
    pub ops: Vec<Op>,
}

impl Delta {
    /// A delta from `from` to `to` with `ops`, carrying no validity times.
    pub fn new(from: u64, to: u64, ops: Vec<Op>) -> Self {
        Self {
            format: DELTA_FORMAT.to_owned(),
            from: SafeInt(from),
            to: SafeInt(to),
            issued_at: None,
            expires_at: None,
            ops,
        }
    }

    /// A renewal (SPEC §4.2): `from = to = revision`, no ops. Signed, it extends validity.
    pub fn renewal(revision: u64) -> Self {
        Self::new(revision, revision, Vec::new())
    }

    /// The same delta carrying `issuedAt` and `expiresAt` (unix seconds), as the server signs it.
    #[must_use]
    pub fn with_expiry(mut self, issued_at: u64, expires_at: u64) -> Self {
        self.issued_at = Some(SafeInt(issued_at));
        self.expires_at = Some(SafeInt(expires_at));
        self
    }

    /// Whether it is a renewal: `to = from` and no ops.
    pub fn is_renewal(&self) -> bool {
        self.to == self.from && self.ops.is_empty()
    }

    /// Parses delta JSON text, checking the schema, the format and the revisions
    /// (`to > from`, or `to = from` with no ops).
    pub fn parse(text: &str) -> Result<Self> {
        let d: Delta =
            serde_json::from_str(text).map_err(|e| Error::from_json(text, &e, ErrorCode::InvalidDelta, "delta"))?;
        d.check()?;
        Ok(d)
    }

    /// Parses an already-decoded JSON value.
    pub fn from_value(value: &serde_json::Value) -> Result<Self> {
        Self::parse(&value.to_string())
    }

    fn check(&self) -> Result<()> {
        if self.format != DELTA_FORMAT {
            return Err(Error::new(
                ErrorCode::InvalidDelta,
                format!(
                    "unknown format `{}` (expected `{DELTA_FORMAT}`)",
                    crate::snapshot::truncate_for_message(&self.format)
                ),
            ));
        }
        if self.to < self.from {
            return Err(Error::new(
                ErrorCode::InvalidDelta,
                format!("`to` ({}) must not be below `from` ({})", self.to.0, self.from.0),
            ));
        }
        if self.to == self.from && !self.ops.is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidDelta,
                format!("`to` equals `from` ({}) but the delta has ops (only a renewal keeps the revision)", self.to.0),
            ));
        }
        Ok(())
    }

    /// The delta as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Reads `ops`, naming the index of a bad op in its error.
fn read_ops<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<Op>, D::Error> {
    crate::tagged::read_list(d, "ops")
}

/// The op names, for error messages.
const OPS: &[&str] =
    &["putOrg", "putUser", "putMembership", "putDevice", "removeOrg", "removeUser", "removeDevice", "removeMembership"];

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut f = Fields::read(d, "delta op")?;
        let op = match f.op.as_str() {
            "putOrg" => Op::PutOrg { org: f.take("org")? },
            "putUser" => Op::PutUser { user: f.take("user")? },
            "putMembership" => Op::PutMembership { membership: f.take("membership")? },
            "putDevice" => Op::PutDevice { device: f.take("device")? },
            "removeOrg" => Op::RemoveOrg { id: f.take("id")? },
            "removeUser" => Op::RemoveUser { id: f.take("id")? },
            "removeDevice" => Op::RemoveDevice { id: f.take("id")? },
            "removeMembership" => Op::RemoveMembership { user: f.take("user")?, org: f.take("org")? },
            _ => return Err(f.unknown_op(OPS)),
        };
        f.finish()?;
        Ok(op)
    }
}

impl Op {
    pub(crate) fn change(&self) -> Change<'_> {
        match self {
            Op::PutOrg { org } => Change::PutOrg(org),
            Op::PutUser { user } => Change::PutUser(user),
            Op::PutMembership { membership } => Change::PutMembership(membership),
            Op::PutDevice { device } => Change::PutDevice(device),
            Op::RemoveOrg { id } => Change::RemoveOrg(id.as_str()),
            Op::RemoveUser { id } => Change::RemoveUser(id.as_str()),
            Op::RemoveDevice { id } => Change::RemoveDevice(id.as_str()),
            Op::RemoveMembership { user, org } => Change::RemoveMembership(user.as_str(), org.as_str()),
        }
    }
}

impl Engine {
    /// Applies a delta atomically: on any error the engine answers exactly as before. A renewal
    /// (`to = from`, no ops) must name the current revision and changes no fact. A delta that
    /// carries `issuedAt`/`expiresAt` sets the document's [`Engine::issued_at`] and
    /// [`Engine::expires_at`]; only a signed delta moves [`Engine::signed_expires_at`].
    pub fn apply_delta(&mut self, delta: &Delta) -> Result<()> {
        delta.check()?;
        if delta.from.0 != self.revision {
            return Err(Error::new(
                ErrorCode::RevisionMismatch,
                format!("delta is from revision {} but the engine is at revision {}", delta.from.0, self.revision),
            ));
        }
        if !delta.ops.is_empty() {
            let changes: Vec<Change<'_>> = delta.ops.iter().map(Op::change).collect();
            self.apply_changes(&changes)?;
        }
        self.revision = delta.to.0;
        if let Some(t) = delta.issued_at {
            self.issued_at = Some(t.0);
        }
        if let Some(t) = delta.expires_at {
            self.expires_at = Some(t.0);
        }
        Ok(())
    }

    /// Parses and applies a delta given as JSON text.
    pub fn apply_delta_json(&mut self, text: &str) -> Result<()> {
        self.apply_delta(&Delta::parse(text)?)
    }
}

impl Engine {
    /// The ops that undo `ops` (applied after them, they restore the state before them):
    /// before-images in reverse order. The server keeps them to rebuild older revisions.
    pub fn inverse_ops(&self, ops: &[Op]) -> Vec<Op> {
        use std::collections::HashMap;
        /// Tracks an entity through the ops: records that it becomes `next` and returns the op
        /// that restores what it was just before (none when it neither was nor becomes).
        fn track<K: Eq + std::hash::Hash, T: Clone>(
            seen: &mut HashMap<K, Option<T>>,
            key: K,
            load: impl FnOnce() -> Option<T>,
            next: Option<T>,
            put: impl FnOnce(T) -> Op,
            remove: impl FnOnce() -> Op,
        ) -> Option<Op> {
            let prev = seen.entry(key).or_insert_with(load);
            let undo = match prev.clone() {
                Some(old) => Some(put(old)),
                None => next.is_some().then(remove),
            };
            *prev = next;
            undo
        }
        let mut orgs: HashMap<&str, Option<OrgDoc>> = HashMap::new();
        let mut users: HashMap<&str, Option<UserDoc>> = HashMap::new();
        let mut mems: HashMap<(&str, &str), Option<MembershipDoc>> = HashMap::new();
        let mut devices: HashMap<&str, Option<DeviceDoc>> = HashMap::new();
        let put_org = |org| Op::PutOrg { org };
        let put_user = |user| Op::PutUser { user };
        let put_mem = |membership| Op::PutMembership { membership };
        let put_device = |device| Op::PutDevice { device };
        let mut inverse: Vec<Op> = ops
            .iter()
            .filter_map(|op| match op {
                Op::PutOrg { org } => {
                    let id = org.id.as_str();
                    let remove = || Op::RemoveOrg { id: org.id.clone() };
                    track(&mut orgs, id, || self.org_doc_by_id(id), Some(org.clone()), put_org, remove)
                }
                Op::RemoveOrg { id } => {
                    let remove = || Op::RemoveOrg { id: id.clone() };
                    track(&mut orgs, id.as_str(), || self.org_doc_by_id(id.as_str()), None, put_org, remove)
                }
                Op::PutUser { user } => {
                    let id = user.id.as_str();
                    let remove = || Op::RemoveUser { id: user.id.clone() };
                    track(&mut users, id, || self.user_doc_by_id(id), Some(user.clone()), put_user, remove)
                }
                Op::RemoveUser { id } => {
                    let remove = || Op::RemoveUser { id: id.clone() };
                    track(&mut users, id.as_str(), || self.user_doc_by_id(id.as_str()), None, put_user, remove)
                }
                Op::PutMembership { membership: m } => {
                    let key = (m.user.as_str(), m.org.as_str());
                    let remove = || Op::RemoveMembership { user: m.user.clone(), org: m.org.clone() };
                    track(&mut mems, key, || self.membership_doc_by_id(key.0, key.1), Some(m.clone()), put_mem, remove)
                }
                Op::RemoveMembership { user, org } => {
                    let key = (user.as_str(), org.as_str());
                    let remove = || Op::RemoveMembership { user: user.clone(), org: org.clone() };
                    track(&mut mems, key, || self.membership_doc_by_id(key.0, key.1), None, put_mem, remove)
                }
                Op::PutDevice { device } => {
                    let id = device.id.as_str();
                    let remove = || Op::RemoveDevice { id: device.id.clone() };
                    track(&mut devices, id, || self.device_doc_by_id(id), Some(device.clone()), put_device, remove)
                }
                Op::RemoveDevice { id } => {
                    let remove = || Op::RemoveDevice { id: id.clone() };
                    track(&mut devices, id.as_str(), || self.device_doc_by_id(id.as_str()), None, put_device, remove)
                }
            })
            .collect();
        inverse.reverse();
        inverse
    }

    /// Runs `f` on the engine as it would be after `ops` (checked as a whole), then restores it
    /// exactly. The server uses it with inverse ops to look at older revisions.
    pub fn with_ops<R>(&mut self, ops: &[Op], f: impl FnOnce(&Engine) -> R) -> Result<R> {
        let changes: Vec<Change<'_>> = ops.iter().map(Op::change).collect();
        self.with_changes(&changes, f)
    }
}

crate::snapshot::object_only!(Delta);
