//! Strict parsing of `{"op": …}`-tagged objects (delta ops, commands) without serde's
//! buffering of internally tagged enums: fields are captured as raw JSON, the `op` picks the
//! variant, and each field is parsed with the same deserializers snapshots use. This keeps the
//! wasm binary small and gives the same errors (unknown field, missing field, wrong type).

use std::fmt;

use serde::de::{DeserializeOwned, Error as _, MapAccess, Visitor};
use serde::Deserializer;
use serde_json::value::RawValue;

use crate::error::{join_path, json_error_parts, PATH_MARK};

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
            None => Err(E::custom(format!("{PATH_MARK}{PATH_MARK}missing field `{name}` for op `{}`", self.op))),
        }
    }

    /// Parses and removes an optional field (absent or `null` is `None`).
    pub(crate) fn opt<T: DeserializeOwned, E: serde::de::Error>(&mut self, name: &str) -> Result<Option<T>, E> {
        let Some(i) = self.fields.iter().position(|(k, _)| k == name) else { return Ok(None) };
        let (_, raw) = self.fields.swap_remove(i);
        serde_json::from_str::<Option<T>>(raw.get()).map_err(|e| E::custom(field_error(name, raw.get(), &e)))
    }

    /// Fails on any field left unread.
    pub(crate) fn finish<E: serde::de::Error>(self) -> Result<(), E> {
        match self.fields.first() {
            None => Ok(()),
            Some((k, _)) => Err(E::custom(format!("{PATH_MARK}{PATH_MARK}unknown field `{k}` for op `{}`", self.op))),
        }
    }

    /// The error for an `op` that is not one of `expected`.
    pub(crate) fn unknown_op<E: serde::de::Error>(&self, expected: &'static [&'static str]) -> E {
        E::custom(format_args!("{PATH_MARK}{PATH_MARK}{}", E::unknown_variant(&self.op, expected)))
    }
}

/// Reads the list `name` of a top-level document, putting `name[index]` of a bad tagged object
/// in front of the path of its error. (A tagged object's errors are raised after it was read,
/// where `serde_json`'s position no longer tells which one it was.)
pub(crate) fn read_list<'de, T: serde::Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
    name: &'static str,
) -> Result<Vec<T>, D::Error> {
    struct ListVisitor<T>(&'static str, std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            loop {
                match seq.next_element::<T>() {
                    Ok(Some(t)) => out.push(t),
                    Ok(None) => return Ok(out),
                    Err(e) => {
                        let text = e.to_string();
                        let Some(rest) = text.strip_prefix(PATH_MARK) else { return Err(e) };
                        let (sub, detail) = rest.split_once(PATH_MARK).unwrap_or(("", rest));
                        let mut path = format!("{}[{}]", self.0, out.len());
                        join_path(&mut path, sub);
                        return Err(A::Error::custom(format_args!("{PATH_MARK}{path}{PATH_MARK}{detail}")));
                    }
                }
            }
        }
    }
    d.deserialize_seq(ListVisitor(name, std::marker::PhantomData))
}

/// The message of an error in field `name` (raw JSON `raw`): its path inside the field continues
/// the field's own (see `json_error_parts`). One function for every field type.
#[inline(never)]
fn field_error(name: &str, raw: &str, e: &serde_json::Error) -> String {
    let (sub, detail) = json_error_parts(raw, e);
    let mut path = name.to_owned();
    join_path(&mut path, &sub);
    format!("{PATH_MARK}{path}{PATH_MARK}{detail}")
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
