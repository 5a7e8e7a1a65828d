//! The JSON shapes of SPEC §4.1 (snapshot) with strict parsing: unknown fields, wrong types and bad ids are errors.

use std::borrow::Cow;
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
        check_id(&s).map(|()| Self(s))
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
        let s = IdRef::deserialize(d)?;
        Ok(Id(s.0 .0.into_owned()))
    }
}

/// Text borrowed from the JSON input when it has no escapes (loading allocates nothing for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Text<'a>(pub Cow<'a, str>);

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Text<'_>> for String {
    fn from(t: Text<'_>) -> String {
        t.0.into_owned()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V).map(Text)
    }
}

/// A validated id borrowed from the JSON input (see [`Id`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct IdRef<'a>(Text<'a>);

impl AsRef<str> for IdRef<'_> {
    fn as_ref(&self) -> &str {
        &self.0 .0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for IdRef<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = Text::deserialize(d)?;
        check_id(&s.0).map(|()| IdRef(s)).map_err(serde::de::Error::custom)
    }
}

pub(crate) fn check_id(s: &str) -> std::result::Result<(), String> {
    match id_problem(s) {
        None => Ok(()),
        Some(why) => Err(format!("invalid id `{}`: {why}", truncate_for_message(s))),
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

/// An org as it appears in JSON. The documents are generic over their id and text types only so
/// that loading can borrow from the input ([`IdRef`], [`Text`]); everywhere else they own theirs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrgDoc<I = Id, S = String> {
    /// The org's id.
    pub id: I,
    /// Display name.
    pub name: S,
    /// Parent org, `null` for a root.
    #[serde(default = "none")]
    pub parent: Option<I>,
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
pub struct UserDoc<I = Id, S = String> {
    /// The user's id.
    pub id: I,
    /// Email address.
    pub email: S,
    /// Display name.
    pub name: S,
    /// Status.
    pub status: Status,
}

/// A membership as it appears in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MembershipDoc<I = Id> {
    /// The member.
    pub user: I,
    /// The org.
    pub org: I,
    /// The role name.
    pub role: RoleName,
}

/// A device as it appears in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceDoc<I = Id, S = String> {
    /// The device's id.
    pub id: I,
    /// Display name.
    pub name: S,
    /// The org it belongs to.
    pub org: I,
    /// Its owner, if any.
    #[serde(default = "none")]
    pub owner: Option<I>,
}

/// A whole snapshot (SPEC §4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotDoc<I = Id, S = String> {
    /// Always `fleetgate/snapshot@1`.
    pub format: S,
    /// Revision.
    pub revision: SafeInt,
    /// `null` for a full snapshot, or the user it was projected for.
    #[serde(default = "none")]
    pub viewer: Option<I>,
    /// Unix seconds when issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<SafeInt>,
    /// Unix seconds after which it must not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<SafeInt>,
    /// Orgs.
    #[serde(default = "Vec::new")]
    pub orgs: Vec<OrgDoc<I, S>>,
    /// Users.
    #[serde(default = "Vec::new")]
    pub users: Vec<UserDoc<I, S>>,
    /// Memberships.
    #[serde(default = "Vec::new")]
    pub memberships: Vec<MembershipDoc<I>>,
    /// Devices.
    #[serde(default = "Vec::new")]
    pub devices: Vec<DeviceDoc<I, S>>,
}

/// The default of the optional fields. (A plain `#[serde(default)]` would make the generic
/// documents require `I: Default`.)
fn none<T>() -> Option<T> {
    None
}

/// A snapshot borrowing its ids and text from the JSON it was parsed from.
pub(crate) type SnapshotRef<'a> = SnapshotDoc<IdRef<'a>, Text<'a>>;

impl<'a> SnapshotRef<'a> {
    /// Parses snapshot JSON text without copying its strings, checking the schema and the `format`.
    pub(crate) fn parse_borrowed(text: &'a str) -> Result<Self> {
        parse_doc(text)
    }
}

impl SnapshotDoc {
    /// Parses snapshot JSON text, checking the schema and the `format`.
    pub fn parse(text: &str) -> Result<Self> {
        parse_doc(text)
    }

    /// Parses an already-decoded JSON value.
    pub fn from_value(value: &serde_json::Value) -> Result<Self> {
        Self::parse(&value.to_string())
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

/// Parses snapshot JSON text into either form of the documents, checking the schema and the `format`.
fn parse_doc<'a, I, S>(text: &'a str) -> Result<SnapshotDoc<I, S>>
where
    SnapshotDoc<I, S>: Deserialize<'a>,
    S: AsRef<str>,
{
    let doc: SnapshotDoc<I, S> =
        serde_json::from_str(text).map_err(|e| Error::from_json(text, &e, ErrorCode::InvalidSnapshot, "snapshot"))?;
    check_format(doc.format.as_ref())?;
    Ok(doc)
}

fn check_format(format: &str) -> Result<()> {
    if format == SNAPSHOT_FORMAT {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::InvalidSnapshot,
            format!("unknown format `{}` (expected `{SNAPSHOT_FORMAT}`)", truncate_for_message(format)),
        ))
    }
}
