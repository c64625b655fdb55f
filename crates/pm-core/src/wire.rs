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
