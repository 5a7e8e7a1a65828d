//! The JSON shapes of SPEC §4.1 (snapshot) with strict parsing: unknown fields, wrong types and bad ids are errors.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, ErrorCode, Result};
use crate::model::{id_problem, Plan, Status};

/// The `format` of a snapshot.
pub const SNAPSHOT_FORMAT: &str = "fleetgate/snapshot@1";
/// Largest revision (and timestamp) a snapshot may carry: 2^53 − 1, exact in JavaScript.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// Longest role name in bytes.
pub const MAX_ROLE_NAME_LEN: usize = 64;

/// A validated id: 1–128 bytes of `[A-Za-z0-9._:@-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Id(String);

impl Id {
    /// Validates `s` as an id.
    pub fn new(s: impl Into<String>) -> std::result::Result<Self, String> {
        let s = s.into();
        match id_problem(&s) {
            None => Ok(Self(s)),
            Some(why) => Err(format!("invalid id `{}`: {why}", truncate_for_message(&s))),
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a string the crate built itself from valid ids.
    pub(crate) fn trusted(s: String) -> Self {
        debug_assert!(id_problem(&s).is_none());
        Self(s)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Id::new(s).map_err(serde::de::Error::custom)
    }
}

/// Shortens a string for an error message.
pub(crate) fn truncate_for_message(s: &str) -> String {
    if s.len() <= 64 {
        s.to_owned()
    } else {
        let cut = (0..=64).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        format!("{}…", s.get(..cut).unwrap_or(""))
    }
}

/// A revision or unix timestamp: an integer from 0 to 2^53 − 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(transparent)]
pub struct SafeInt(pub u64);

impl<'de> Deserialize<'de> for SafeInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        if n > MAX_SAFE_INTEGER {
            return Err(serde::de::Error::custom(format!("integer {n} is above 2^53 - 1")));
        }
        Ok(SafeInt(n))
    }
}

/// A role name in a role table or membership: 1–64 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoleName(String);

impl RoleName {
    /// Validates a role name.
    pub fn new(s: impl Into<String>) -> std::result::Result<Self, String> {
        let s = s.into();
        if s.is_empty() || s.len() > MAX_ROLE_NAME_LEN || s.chars().any(char::is_control) {
            Err(format!("invalid role name `{}`", truncate_for_message(&s)))
        } else {
            Ok(Self(s))
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a name the crate built itself from valid names.
    pub(crate) fn trusted(s: String) -> Self {
        Self(s)
    }
}

impl<'de> Deserialize<'de> for RoleName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RoleName::new(s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An org as it appears in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrgDoc {
    /// The org's id.
    pub id: Id,
    /// Display name.
    pub name: String,
    /// Parent org, `null` for a root.
    #[serde(default)]
    pub parent: Option<Id>,
    /// Plan (read on roots only).
    #[serde(default)]
    pub plan: Plan,
    /// Whether the org itself is suspended.
    #[serde(default)]
    pub suspended: bool,
    /// Role table: role name → permission ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<BTreeMap<RoleName, Vec<String>>>,
}

/// A user as it appears in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserDoc {
    /// The user's id.
    pub id: Id,
    /// Email address.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Status.
    pub status: Status,
}

/// A membership as it appears in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MembershipDoc {
    /// The member.
    pub user: Id,
    /// The org.
    pub org: Id,
    /// The role name.
    pub role: RoleName,
}

/// A device as it appears in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceDoc {
    /// The device's id.
    pub id: Id,
    /// Display name.
    pub name: String,
    /// The org it belongs to.
    pub org: Id,
    /// Its owner, if any.
    #[serde(default)]
    pub owner: Option<Id>,
}

/// A whole snapshot (SPEC §4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotDoc {
    /// Always `fleetgate/snapshot@1`.
    pub format: String,
    /// Revision.
    pub revision: SafeInt,
    /// `null` for a full snapshot, or the user it was projected for.
    #[serde(default)]
    pub viewer: Option<Id>,
    /// Unix seconds when issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<SafeInt>,
    /// Unix seconds after which it must not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<SafeInt>,
    /// Orgs.
    #[serde(default)]
    pub orgs: Vec<OrgDoc>,
    /// Users.
    #[serde(default)]
    pub users: Vec<UserDoc>,
    /// Memberships.
    #[serde(default)]
    pub memberships: Vec<MembershipDoc>,
    /// Devices.
    #[serde(default)]
    pub devices: Vec<DeviceDoc>,
}

impl SnapshotDoc {
    /// Parses snapshot JSON text, checking the schema and the `format`.
    pub fn parse(text: &str) -> Result<Self> {
        let doc: SnapshotDoc = serde_json::from_str(text)
            .map_err(|e| Error::from_json(text, &e, ErrorCode::InvalidSnapshot, "snapshot"))?;
        doc.check_format()?;
        Ok(doc)
    }

    /// Parses an already-decoded JSON value.
    pub fn from_value(value: &serde_json::Value) -> Result<Self> {
        Self::parse(&value.to_string())
    }

    fn check_format(&self) -> Result<()> {
        if self.format == SNAPSHOT_FORMAT {
            Ok(())
        } else {
            Err(Error::new(
                ErrorCode::InvalidSnapshot,
                format!("unknown format `{}` (expected `{SNAPSHOT_FORMAT}`)", truncate_for_message(&self.format)),
            ))
        }
    }

    /// An empty snapshot at `revision`.
    pub fn empty(revision: u64) -> Self {
        Self {
            format: SNAPSHOT_FORMAT.to_owned(),
            revision: SafeInt(revision),
            viewer: None,
            issued_at: None,
            expires_at: None,
            orgs: Vec::new(),
            users: Vec::new(),
            memberships: Vec::new(),
            devices: Vec::new(),
        }
    }
}
