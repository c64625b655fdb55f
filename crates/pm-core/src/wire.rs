//! Reading an object whose keys belong to two places: a struct with a derived `Deserialize` and the fields
//! around it (a [`crate::ProcessEntry`] is its [`crate::ProcessConfig`] plus what the monitor observed plus the
//! keys this version does not know), in one pass and without buffering.
//!
//! serde's `#[serde(flatten)]` does the same by first copying every key it does not know itself, with its whole
//! value, into an in-memory tree (`Content`), and then reading the flattened struct from that tree: for a
//! registry of 10,000 entries that copy was most of the time a parse took. Here the object's own `MapAccess` is
//! handed to the inner struct's derived visitor through [`Routed`], which passes it the keys the derive lists as
//! its fields, lets the caller take the keys it knows, and collects the rest as JSON values, all as they come.

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

/// An object key, borrowed from the input where it can be (no escapes in it).
pub(crate) enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(key) => key,
            Key::Owned(key) => key,
        }
    }

    fn into_string(self) -> String {
        match self {
            Key::Borrowed(key) => key.to_owned(),
            Key::Owned(key) => key,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(key))
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key.to_owned()))
            }
            fn visit_string<E: de::Error>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The caller's share of an object's keys: the fields around the inner struct.
pub(crate) trait Outer<'de> {
    /// Reads the value of `key` from `map` and answers true if the key is one of the caller's; answers false,
    /// reading nothing, for any other key.
    fn take<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
}

/// Reads `T` (a struct with a derived `Deserialize` and no flattened fields) from the object `map` is reading,
/// handing the keys `T` does not list as its fields to `outer` and, when `outer` does not take them either,
/// collecting them in `extra` (in their order). Errors are those of the derive (`missing field`, `invalid
/// type`, `duplicate field`), raised where the input is.
pub(crate) fn read_routed<'de, T, A, O>(
    map: &mut A,
    outer: &mut O,
    extra: &mut Map<String, Value>,
) -> Result<T, A::Error>
where
    T: de::Deserialize<'de>,
    A: MapAccess<'de>,
    O: Outer<'de>,
{
    T::deserialize(Routed { map, outer, extra })
}

/// The [`Deserializer`] [`read_routed`] gives the inner struct: it answers `deserialize_struct` with the
/// object's remaining keys, filtered.
struct Routed<'a, A, O> {
    map: &'a mut A,
    outer: &'a mut O,
    extra: &'a mut Map<String, Value>,
}

impl<'de, A: MapAccess<'de>, O: Outer<'de>> Deserializer<'de> for Routed<'_, A, O> {
    type Error = A::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_map(RoutedMap { map: self.map, outer: self.outer, extra: self.extra, fields })
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, A::Error> {
        Err(de::Error::custom("internal: a routed object can only be read as a struct"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

struct RoutedMap<'a, A, O> {
    map: &'a mut A,
    outer: &'a mut O,
    extra: &'a mut Map<String, Value>,
    fields: &'static [&'static str],
}

impl<'de, A: MapAccess<'de>, O: Outer<'de>> MapAccess<'de> for RoutedMap<'_, A, O> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.map.next_key::<Key<'de>>()? {
            if self.fields.contains(&key.as_str()) {
                return match key {
                    Key::Borrowed(key) => seed.deserialize(de::value::BorrowedStrDeserializer::new(key)),
                    Key::Owned(key) => seed.deserialize(IntoDeserializer::<'de, A::Error>::into_deserializer(key)),
                }
                .map(Some);
            }
            if !self.outer.take(key.as_str(), self.map)? {
                let value: Value = self.map.next_value()?;
                self.extra.insert(key.into_string(), value);
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// Reads the value of the field `name` into `slot`, refusing a second occurrence as the derive does.
pub(crate) fn set<'de, T: de::Deserialize<'de>, A: MapAccess<'de>>(
    slot: &mut Option<T>,
    name: &'static str,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// serde_json's `PrettyFormatter` (two spaces a level), byte for byte, writing each line break with its
/// indentation in one write instead of one write per level: the indentation was an eighth of the time a
/// registry of 10,000 entries took to write.
#[derive(Default)]
pub(crate) struct Pretty {
    level: usize,
    has_value: bool,
}

/// A line break followed by the indentation of up to 64 levels.
const BREAKS: &[u8; 129] = b"\n                                                                                                                                ";

impl Pretty {
    /// A formatter for a value that is written `level` levels deep in a document (its closing bracket indented
    /// by `level` steps), such as an entry of `processes` (level 2).
    pub(crate) fn at(level: usize) -> Pretty {
        Pretty { level, has_value: false }
    }

    /// A line break and the indentation of the current level.
    fn line<W: ?Sized + std::io::Write>(&self, writer: &mut W) -> std::io::Result<()> {
        let width = 2 * self.level;
        if width < BREAKS.len() {
            return writer.write_all(&BREAKS[..=width]);
        }
        writer.write_all(b"\n")?;
        (0..self.level).try_for_each(|_| writer.write_all(b"  "))
    }
}

impl serde_json::ser::Formatter for Pretty {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.level += 1;
        self.has_value = false;
        writer.write_all(b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.level -= 1;
        if self.has_value {
            self.line(writer)?;
        }
        writer.write_all(b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if !first {
            writer.write_all(b",")?;
        }
        self.line(writer)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _writer: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.level += 1;
        self.has_value = false;
        writer.write_all(b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.level -= 1;
        if self.has_value {
            self.line(writer)?;
        }
        writer.write_all(b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if !first {
            writer.write_all(b",")?;
        }
        self.line(writer)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _writer: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn pretty(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        serde::Serialize::serialize(value, &mut serde_json::Serializer::with_formatter(&mut out, Pretty::default()))
            .unwrap();
        out
    }

    #[test]
    fn pretty_writes_what_serde_json_writes() {
        let mut deep = json!("bottom");
        for level in 0..70 {
            deep = if level % 2 == 0 { json!([deep, {}, []]) } else { json!({"k": deep, "e": [], "o": {}}) };
        }
        for value in [
            json!({}),
            json!([]),
            json!(null),
            json!({"a": 1, "b": [1, 2, {"c": "x\ny", "d": []}], "e": {"f": {}, "g": [[]]}}),
            crate::registry::tests::example(),
            deep,
        ] {
            assert_eq!(pretty(&value), serde_json::to_vec_pretty(&value).unwrap(), "{value}");
        }
    }
}
