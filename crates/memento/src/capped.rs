//! A serde deserializer adapter that bounds what a hostile payload can make
//! the decoder allocate ahead of reading.
//!
//! A postcard sequence or map starts with its length, and serde's
//! collections reserve room for up to that many elements before reading
//! them (at most 1 MiB worth, serde's "cautious" limit). postcard drops a
//! sequence's hint when fewer bytes are left than it claims, but passes a
//! map's on: an entry of a few bytes could claim a billion entries and get
//! a megabyte reserved for each map it nests. Every element takes at least one byte of the
//! payload (zero-sized ones take none, and reserve nothing), so this adapter
//! clamps every size hint to the payload's length: what is reserved ahead
//! is then bounded by the payload's length times the element's size.
//! Everything else is passed through unchanged.

use std::fmt;

use serde::de::{
    DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// `inner`, with every sequence's and map's size hint at most `cap`.
pub(crate) struct Capped<D> {
    pub(crate) inner: D,
    pub(crate) cap: usize,
}

struct CappedVisitor<V> {
    inner: V,
    cap: usize,
}

struct CappedSeed<S> {
    inner: S,
    cap: usize,
}

struct CappedAccess<A> {
    inner: A,
    cap: usize,
}

macro_rules! forward_deserialize {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.inner.$method(CappedVisitor { inner: visitor, cap: self.cap })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Capped<D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let cap = self.cap;
        self.inner.deserialize_unit_struct(
            name,
            CappedVisitor {
                inner: visitor,
                cap,
            },
        )
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let cap = self.cap;
        self.inner.deserialize_newtype_struct(
            name,
            CappedVisitor {
                inner: visitor,
                cap,
            },
        )
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let cap = self.cap;
        self.inner.deserialize_tuple(
            len,
            CappedVisitor {
                inner: visitor,
                cap,
            },
        )
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let cap = self.cap;
        self.inner.deserialize_tuple_struct(
            name,
            len,
            CappedVisitor {
                inner: visitor,
                cap,
            },
        )
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let cap = self.cap;
        self.inner.deserialize_struct(
            name,
            fields,
            CappedVisitor {
                inner: visitor,
                cap,
            },
        )
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let cap = self.cap;
        self.inner.deserialize_enum(
            name,
            variants,
            CappedVisitor {
                inner: visitor,
                cap,
            },
        )
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: serde::de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for CappedVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Capped {
            inner: d,
            cap: self.cap,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Capped {
            inner: d,
            cap: self.cap,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_seq(CappedAccess {
            inner: seq,
            cap: self.cap,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(CappedAccess {
            inner: map,
            cap: self.cap,
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(CappedAccess {
            inner: data,
            cap: self.cap,
        })
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for CappedSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Capped {
            inner: d,
            cap: self.cap,
        })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for CappedAccess<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let cap = self.cap;
        self.inner
            .next_element_seed(CappedSeed { inner: seed, cap })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint().map(|n| n.min(self.cap))
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for CappedAccess<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let cap = self.cap;
        self.inner.next_key_seed(CappedSeed { inner: seed, cap })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        let cap = self.cap;
        self.inner.next_value_seed(CappedSeed { inner: seed, cap })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint().map(|n| n.min(self.cap))
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for CappedAccess<A> {
    type Error = A::Error;
    type Variant = CappedAccess<A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let cap = self.cap;
        let (value, variant) = self.inner.variant_seed(CappedSeed { inner: seed, cap })?;
        Ok((
            value,
            CappedAccess {
                inner: variant,
                cap,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for CappedAccess<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        let cap = self.cap;
        self.inner
            .newtype_variant_seed(CappedSeed { inner: seed, cap })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let cap = self.cap;
        self.inner.tuple_variant(
            len,
            CappedVisitor {
                inner: visitor,
                cap,
            },
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let cap = self.cap;
        self.inner.struct_variant(
            fields,
            CappedVisitor {
                inner: visitor,
                cap,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Records the size hint a map saw.
    struct Probe(Option<usize>);

    impl<'de> Deserialize<'de> for Probe {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Probe, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Probe;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Probe, A::Error> {
                    Ok(Probe(map.size_hint()))
                }
            }
            d.deserialize_map(V)
        }
    }

    #[test]
    fn size_hints_are_clamped_to_the_payload() {
        // A postcard map claiming 2^40 entries, in 6 bytes. (postcard
        // itself already drops sequence hints longer than what is left, not
        // map hints.)
        let payload = postcard::to_allocvec(&(1u64 << 40)).unwrap();
        let mut de = postcard::Deserializer::from_bytes(&payload);
        let raw = Probe::deserialize(&mut de).unwrap();
        assert_eq!(raw.0, Some(1 << 40), "postcard passes the claim on");
        let mut de = postcard::Deserializer::from_bytes(&payload);
        let capped = Probe::deserialize(Capped {
            inner: &mut de,
            cap: payload.len(),
        })
        .unwrap();
        assert_eq!(capped.0, Some(payload.len()));
    }
}
