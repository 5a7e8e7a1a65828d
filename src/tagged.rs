//! Strict parsing of `{"op": …}`-tagged objects (delta ops, commands) without serde's
//! buffering of internally tagged enums: fields are captured as raw JSON, the `op` picks the
//! variant, and each field is parsed with the same deserializers snapshots use. This keeps the
//! wasm binary small and gives the same errors (unknown field, missing field, wrong type).

use std::fmt;

use serde::de::{DeserializeOwned, Error as _, MapAccess, Visitor};
use serde::Deserializer;
use serde_json::value::RawValue;

/// The fields of a tagged object, each still raw JSON.
pub(crate) struct Fields {
    pub op: String,
    fields: Vec<(String, Box<RawValue>)>,
}

impl Fields {
    /// Reads a JSON object with an `op` string and its other fields.
    pub(crate) fn read<'de, D: Deserializer<'de>>(d: D, what: &'static str) -> Result<Self, D::Error> {
        d.deserialize_map(FieldsVisitor(what))
    }

    /// Parses and removes a required field.
    pub(crate) fn take<T: DeserializeOwned, E: serde::de::Error>(&mut self, name: &str) -> Result<T, E> {
        match self.opt(name)? {
            Some(v) => Ok(v),
            None => Err(E::custom(format!("missing field `{name}` for op `{}`", self.op))),
        }
    }

    /// Parses and removes an optional field (absent or `null` is `None`).
    pub(crate) fn opt<T: DeserializeOwned, E: serde::de::Error>(&mut self, name: &str) -> Result<Option<T>, E> {
        let Some(i) = self.fields.iter().position(|(k, _)| k == name) else { return Ok(None) };
        let (_, raw) = self.fields.swap_remove(i);
        serde_json::from_str::<Option<T>>(raw.get()).map_err(|e| E::custom(format!("field `{name}`: {e}")))
    }

    /// Fails on any field left unread.
    pub(crate) fn finish<E: serde::de::Error>(self) -> Result<(), E> {
        match self.fields.first() {
            None => Ok(()),
            Some((k, _)) => Err(E::custom(format!("unknown field `{k}` for op `{}`", self.op))),
        }
    }

    /// The error for an `op` that is not one of `expected`.
    pub(crate) fn unknown_op<E: serde::de::Error>(&self, expected: &'static [&'static str]) -> E {
        E::unknown_variant(&self.op, expected)
    }
}

struct FieldsVisitor(&'static str);

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} object with an `op`", self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut op = None;
        let mut fields: Vec<(String, Box<RawValue>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.iter().any(|(k, _)| *k == key) || (key == "op" && op.is_some()) {
                return Err(A::Error::custom(format!("duplicate field `{key}`")));
            }
            if key == "op" {
                op = Some(map.next_value::<String>()?);
            } else {
                fields.push((key, map.next_value::<Box<RawValue>>()?));
            }
        }
        let op = op.ok_or_else(|| A::Error::missing_field("op"))?;
        Ok(Fields { op, fields })
    }
}
