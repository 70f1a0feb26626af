//! A serde deserializer wrapper that bounds nesting *while* decoding.
//!
//! bincode bounds the bytes a message may claim, not how deeply its values
//! nest, and serde decodes a nested value by recursion: a recursive type
//! (a supervision spec holds supervisors that hold specs…) sent 5,000
//! levels deep fits in one multicast and overflows the stack of every member
//! that decodes it, which aborts the process. Checking the depth after
//! decoding is too late. So every value decoded from the network goes
//! through [`Limited`], which counts one level for each compound value it
//! enters (sequence, map, struct, tuple, enum variant, `Some`, newtype) and
//! fails the decode, as an ordinary error, once the count passes the bound.
//!
//! The wrapper changes nothing else: the same visitor calls reach the type
//! being decoded, in the same order, so the bytes accepted are exactly
//! those bincode accepts, minus the too-deep ones.

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess};
use serde::de::{VariantAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// How many compound values may nest in one decoded value. A supervision
/// spec at its own bound ([`crate::supervisor::MAX_DEPTH`] supervisors)
/// inside a group snapshot nests about 4 levels a supervisor plus a dozen
/// around it, so 192 leaves it room; at this depth decoding uses well under
/// 1 MiB of stack even in a debug build, so it fits the 2 MiB stacks of
/// tokio's and actix's threads with the engine's own recursion on top.
pub const MAX_NESTING: usize = 192;

/// A seed that decodes a `T` with at most `remaining` nested levels.
pub(crate) struct Seed<T> {
    remaining: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Seed<T> {
    pub(crate) fn new(remaining: usize) -> Self {
        Seed {
            remaining,
            _t: PhantomData,
        }
    }
}

impl<'de, T: de::Deserialize<'de>> DeserializeSeed<'de> for Seed<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(Limited {
            inner: d,
            remaining: self.remaining,
        })
    }
}

/// A deserializer whose values may nest at most `remaining` levels.
struct Limited<D> {
    inner: D,
    remaining: usize,
}

/// Wraps the visitor a type hands to the deserializer, so that the
/// compound values it is given are bounded in turn.
struct LimitedVisitor<V> {
    inner: V,
    remaining: usize,
}

/// Wraps a seed for one nested value.
struct LimitedSeed<S> {
    inner: S,
    remaining: usize,
}

/// Wraps the access to a sequence's, map's or enum's contents.
struct LimitedAccess<A> {
    inner: A,
    remaining: usize,
}

fn too_deep<E: de::Error>() -> E {
    E::custom(format_args!("values nest deeper than {MAX_NESTING} levels"))
}

impl<V> LimitedVisitor<V> {
    /// The budget for the contents of a compound value, or the error when
    /// there is none left.
    fn enter<E: de::Error>(&self) -> Result<usize, E> {
        self.remaining.checked_sub(1).ok_or_else(too_deep)
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for LimitedSeed<S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Limited {
            inner: d,
            remaining: self.remaining,
        })
    }
}

macro_rules! forward_scalar_visits {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for LimitedVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_scalar_visits! {
        visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64),
        visit_i128(i128), visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64),
        visit_u128(u128), visit_f32(f32), visit_f64(f64), visit_char(char),
        visit_str(&str), visit_borrowed_str(&'de str), visit_string(String),
        visit_bytes(&[u8]), visit_borrowed_bytes(&'de [u8]), visit_byte_buf(Vec<u8>),
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let remaining = self.enter()?;
        self.inner.visit_some(Limited {
            inner: d,
            remaining,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let remaining = self.enter()?;
        self.inner.visit_newtype_struct(Limited {
            inner: d,
            remaining,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let remaining = self.enter()?;
        self.inner.visit_seq(LimitedAccess {
            inner: seq,
            remaining,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let remaining = self.enter()?;
        self.inner.visit_map(LimitedAccess {
            inner: map,
            remaining,
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let remaining = self.enter()?;
        self.inner.visit_enum(LimitedAccess {
            inner: data,
            remaining,
        })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for LimitedAccess<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(LimitedSeed {
            inner: seed,
            remaining: self.remaining,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for LimitedAccess<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(LimitedSeed {
            inner: seed,
            remaining: self.remaining,
        })
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(LimitedSeed {
            inner: seed,
            remaining: self.remaining,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for LimitedAccess<A> {
    type Error = A::Error;
    type Variant = LimitedAccess<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let remaining = self.remaining;
        let (tag, variant) = self.inner.variant_seed(LimitedSeed {
            inner: seed,
            remaining,
        })?;
        Ok((
            tag,
            LimitedAccess {
                inner: variant,
                remaining,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for LimitedAccess<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(LimitedSeed {
            inner: seed,
            remaining: self.remaining,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(
            len,
            LimitedVisitor {
                inner: visitor,
                remaining: self.remaining,
            },
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(
            fields,
            LimitedVisitor {
                inner: visitor,
                remaining: self.remaining,
            },
        )
    }
}

macro_rules! forward_deserialize {
    ($($method:ident$(($($arg:ident: $ty:ty),*))?),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($($arg: $ty,)*)? visitor: V) -> Result<V::Value, D::Error> {
                let visitor = LimitedVisitor { inner: visitor, remaining: self.remaining };
                self.inner.$method($($($arg,)*)? visitor)
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any, deserialize_bool, deserialize_i8, deserialize_i16, deserialize_i32,
        deserialize_i64, deserialize_i128, deserialize_u8, deserialize_u16, deserialize_u32,
        deserialize_u64, deserialize_u128, deserialize_f32, deserialize_f64, deserialize_char,
        deserialize_str, deserialize_string, deserialize_bytes, deserialize_byte_buf,
        deserialize_option, deserialize_unit, deserialize_seq, deserialize_map,
        deserialize_identifier, deserialize_ignored_any,
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bincode::Options;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Tree {
        Leaf(u32),
        Node(Vec<Tree>),
        Pair(Box<Tree>, Option<Box<Tree>>),
        Named { left: Box<Tree> },
    }

    fn opts() -> impl Options + Copy {
        bincode::DefaultOptions::new().with_fixint_encoding()
    }

    fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], depth: usize) -> bincode::Result<T> {
        opts().deserialize_seed(Seed::<T>::new(depth), bytes)
    }

    fn sample() -> Tree {
        Tree::Node(vec![
            Tree::Leaf(1),
            Tree::Pair(Box::new(Tree::Leaf(2)), Some(Box::new(Tree::Leaf(3)))),
            Tree::Named {
                left: Box::new(Tree::Node(vec![])),
            },
        ])
    }

    #[test]
    fn within_the_bound_the_value_is_what_bincode_reads() {
        let bytes = opts().serialize(&sample()).unwrap();
        assert_eq!(decode::<Tree>(&bytes, MAX_NESTING).unwrap(), sample());
        let plain: Tree = opts().deserialize(&bytes).unwrap();
        assert_eq!(plain, sample());
    }

    #[test]
    fn each_compound_value_costs_one_level() {
        // Node(vec![Named { left: Leaf }]): enum, seq, enum, struct, enum.
        let v = Tree::Node(vec![Tree::Named {
            left: Box::new(Tree::Leaf(0)),
        }]);
        let bytes = opts().serialize(&v).unwrap();
        assert!(decode::<Tree>(&bytes, 4).is_err());
        assert_eq!(decode::<Tree>(&bytes, 5).unwrap(), v);
        // Some(..) counts too.
        let opt = Some(Some(1u8));
        let bytes = opts().serialize(&opt).unwrap();
        assert!(decode::<Option<Option<u8>>>(&bytes, 1).is_err());
        assert_eq!(decode::<Option<Option<u8>>>(&bytes, 2).unwrap(), opt);
    }

    /// The bytes of `levels` nested `Node`s, written by hand: building the
    /// value itself would recurse as deep.
    fn deep_bytes(levels: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..levels {
            out.extend_from_slice(&1u32.to_le_bytes()); // Node
            out.extend_from_slice(&1u64.to_le_bytes()); // one element
        }
        out.extend_from_slice(&0u32.to_le_bytes()); // Leaf
        out.extend_from_slice(&7u32.to_le_bytes());
        out
    }

    #[test]
    fn a_value_nested_past_the_bound_is_an_error_not_a_stack_overflow() {
        // A million levels fit in 12 MB; on a small stack without the bound
        // this aborts the process.
        let bytes = deep_bytes(1_000_000);
        let outcome = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || decode::<Tree>(&bytes, MAX_NESTING).map(|_| ()))
            .unwrap()
            .join()
            .unwrap();
        let err = outcome.unwrap_err().to_string();
        assert!(err.contains("nest deeper"), "{err}");
    }

    #[test]
    fn at_the_bound_a_value_decodes_on_a_small_stack() {
        let bytes = deep_bytes(MAX_NESTING / 2 - 1);
        let ok = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || decode::<Tree>(&bytes, MAX_NESTING).is_ok())
            .unwrap()
            .join()
            .unwrap();
        assert!(ok);
    }
}
