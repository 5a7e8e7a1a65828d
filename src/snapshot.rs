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

/// Reads a string, checking it inside the visitor (so the error carries the string's position,
/// hence its path): kind 0 is any text, 1 an id, 2 a role name. (A run-time kind, not a const
/// parameter: one reader per deserializer keeps the `.wasm` small.)
struct TextVisitor(u8);

impl TextVisitor {
    fn check<E: serde::de::Error>(&self, v: &str) -> std::result::Result<(), E> {
        match self.0 {
            1 => check_id(v).map_err(E::custom),
            2 => check_role_name(v).map_err(E::custom),
            _ => Ok(()),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            1 => "an id",
            2 => "a role name",
            _ => "a string",
        })
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
        self.check(v)?;
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        self.check(v)?;
        Ok(Cow::Owned(v.to_owned()))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_str(TextVisitor(0)).map(Text)
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
        d.deserialize_str(TextVisitor(1)).map(|s| IdRef(Text(s)))
    }
}

pub(crate) fn check_id(s: &str) -> std::result::Result<(), String> {
    match id_problem(s) {
        None => Ok(()),
        Some(why) => Err(format!("invalid id `{}`: {why}", truncate_for_message(s))),
    }
}

fn check_role_name(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() || s.len() > MAX_ROLE_NAME_LEN || s.chars().any(char::is_control) {
        Err(format!("invalid role name `{}`", truncate_for_message(s)))
    } else {
        Ok(())
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
        d.deserialize_u64(SafeIntVisitor)
    }
}

/// Reads a [`SafeInt`], checking it inside the visitor (so the error carries its path).
struct SafeIntVisitor;

impl serde::de::Visitor<'_> for SafeIntVisitor {
    type Value = SafeInt;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer from 0 to 2^53 - 1")
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<SafeInt, E> {
        if n > MAX_SAFE_INTEGER {
            return Err(E::custom(format!("integer {n} is above 2^53 - 1")));
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
        check_role_name(&s).map(|()| Self(s))
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
        d.deserialize_str(TextVisitor(2)).map(|s| RoleName(s.into_owned()))
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
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields, expecting = "an org object")]
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
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields, expecting = "a user object")]
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
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields, expecting = "a membership object")]
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
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields, expecting = "a device object")]
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
#[serde(remote = "Self", rename_all = "camelCase", deny_unknown_fields, expecting = "a snapshot object")]
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

/// A deserializer that reads structs from JSON objects only. serde's derived struct readers
/// also accept the array form (`["acme", "ACME", null]` for an org), which the schema does not
/// allow; sending them to `deserialize_map` refuses it (and leaves the array reader out of the
/// `.wasm`). Used through [`object_only!`].
pub(crate) struct ObjectOnly<D>(pub D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_any(v)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> std::result::Result<V::Value, D::Error> {
        self.0.deserialize_map(v)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// Implements `Serialize` and `Deserialize` for a struct declared with
/// `#[serde(remote = "Self")]` (whose derives then generate inherent functions), reading it
/// through [`ObjectOnly`].
macro_rules! object_only {
    ($name:ident $(<$($g:ident),*>)?) => {
        impl<'de $($(, $g)*)?> serde::Deserialize<'de> for $name $(<$($g),*>)?
        where
            $name $(<$($g),*>)?: Sized,
            $($($g: serde::Deserialize<'de>,)*)?
        {
            fn deserialize<De: serde::Deserializer<'de>>(d: De) -> std::result::Result<Self, De::Error> {
                $name::deserialize($crate::snapshot::ObjectOnly(d))
            }
        }

        impl $(<$($g: serde::Serialize),*>)? serde::Serialize for $name $(<$($g),*>)? {
            fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> std::result::Result<Ser::Ok, Ser::Error> {
                $name::serialize(self, s)
            }
        }
    };
}
pub(crate) use object_only;

object_only!(OrgDoc<I, S>);
object_only!(UserDoc<I, S>);
object_only!(MembershipDoc<I>);
object_only!(DeviceDoc<I, S>);
object_only!(SnapshotDoc<I, S>);
