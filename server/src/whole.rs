//! Reading optional counts (`dimensions`, `top_n`), tensor dimensions (`shape`) and token ids from
//! JSON as the OpenAPI document states them: whole numbers of at least 1, of at least 0, and of
//! any sign.
//!
//! JSON Schema counts `2.0` as an integer, so whole-number floats are served. Values past the
//! Rust type saturate rather than fail: the bound that matters (a model's width, a document count,
//! a model's input shape, a codebook's size) is checked later against the model, with a message
//! that names it.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

/// A whole number of at least 1.
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = deserializer.deserialize_any(WholeVisitor { min: 1 })?;
        Ok(Count(usize::try_from(value).unwrap_or(usize::MAX)))
    }
}

/// A whole number of at least 0.
struct Dimension(u64);

impl<'de> Deserialize<'de> for Dimension {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WholeVisitor { min: 0 }).map(Dimension)
    }
}

/// Whole numbers of at least `min`, saturating at `u64::MAX`.
struct WholeVisitor {
    min: u64,
}

impl WholeVisitor {
    fn too_small<E: de::Error>(&self, shown: impl fmt::Display) -> E {
        E::custom(format!("must be a whole number of at least {}, got {shown}", self.min))
    }
}

impl Visitor<'_> for WholeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a whole number of at least {}", self.min)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
        if value < self.min {
            return Err(self.too_small(value));
        }
        Ok(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
        let unsigned = u64::try_from(value).map_err(|_| self.too_small(value))?;
        self.visit_u64(unsigned)
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<u64, E> {
        self.visit_u64(u64::try_from(value).unwrap_or(u64::MAX))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<u64, E> {
        if value < i128::from(self.min) {
            return Err(self.too_small(value));
        }
        self.visit_u128(value.unsigned_abs())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<u64, E> {
        // Written so that NaN fails too.
        if !(value.fract() == 0.0 && value >= self.min as f64) {
            return Err(self.too_small(value));
        }
        // `as` saturates, which is the intent for huge values.
        Ok(value as u64)
    }
}

/// A whole number of any sign, saturating at the bounds of `i64`.
struct Integer(i64);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IntegerVisitor).map(Integer)
    }
}

struct IntegerVisitor;

impl Visitor<'_> for IntegerVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a whole number")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<i64, E> {
        Ok(i64::try_from(value).unwrap_or(i64::MAX))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<i64, E> {
        Ok(value)
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<i64, E> {
        Ok(i64::try_from(value).unwrap_or(i64::MAX))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<i64, E> {
        Ok(i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX }))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<i64, E> {
        // NaN's fraction is NaN, which is not 0, so NaN fails too.
        if value.fract() != 0.0 {
            return Err(E::custom(format!("must be a whole number, got {value}")));
        }
        // `as` saturates, which is the intent for huge values.
        Ok(value as i64)
    }
}

/// An optional count in a JSON body; `null` means the same as leaving it out.
pub(crate) fn optional_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    Ok(Option::<Count>::deserialize(deserializer)?.map(|c| c.0))
}

/// An optional size in bytes; `null` means the same as leaving it out.
pub(crate) fn optional_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<Dimension>::deserialize(deserializer)?.map(|d| d.0))
}

/// One dimension of a grid: a whole number of at least 0, saturating at `usize::MAX`.
pub(crate) fn dimension<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    Ok(usize::try_from(Dimension::deserialize(deserializer)?.0).unwrap_or(usize::MAX))
}

/// Ids such as tokens: whole numbers of any sign, saturating at the bounds of `i64`, so that the
/// model's own range check names the id that does not fit.
pub(crate) fn integers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<i64>, D::Error> {
    Ok(Vec::<Integer>::deserialize(deserializer)?.into_iter().map(|i| i.0).collect())
}

/// Optional [`integers`]; `null` means the same as leaving them out.
pub(crate) fn optional_integers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<i64>>, D::Error> {
    Ok(Option::<Vec<Integer>>::deserialize(deserializer)?.map(|ids| ids.into_iter().map(|i| i.0).collect()))
}

/// A tensor's shape: whole numbers of at least 0.
pub(crate) fn dimensions<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
    Ok(Vec::<Dimension>::deserialize(deserializer)?.into_iter().map(|d| d.0).collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "super::optional_count")]
        n: Option<usize>,
    }

    fn check(value: serde_json::Value) -> Result<Option<usize>, String> {
        serde_json::from_value::<Body>(json!({ "n": value })).map(|b| b.n).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_pass_and_saturate_others_fail() {
        assert_eq!(check(json!(3)), Ok(Some(3)));
        assert_eq!(check(json!(3.0)), Ok(Some(3)));
        assert_eq!(check(json!(null)), Ok(None));
        assert_eq!(check(json!(1e300)), Ok(Some(usize::MAX)));
        let huge: Body = serde_json::from_str(r#"{"n": 167976156296019542016}"#).unwrap();
        assert_eq!(huge.n, Some(usize::MAX));
        for bad in [json!(0), json!(-2), json!(2.5), json!("3"), json!(0.0)] {
            assert!(check(bad.clone()).is_err(), "{bad}");
        }
    }

    #[derive(serde::Deserialize)]
    struct Tensor {
        #[serde(deserialize_with = "super::dimensions")]
        shape: Vec<u64>,
    }

    #[test]
    fn dimensions_are_whole_numbers_from_zero() {
        let shape = |v: serde_json::Value| {
            serde_json::from_value::<Tensor>(json!({ "shape": v })).map(|t| t.shape).map_err(|e| e.to_string())
        };
        assert_eq!(shape(json!([0, 2.0, 3])), Ok(vec![0, 2, 3]));
        assert_eq!(shape(json!([1e30])), Ok(vec![u64::MAX]));
        assert!(shape(json!([-1])).unwrap_err().contains("at least 0, got -1"));
        assert!(shape(json!([0.5])).is_err());
        assert!(shape(json!(3)).is_err());
    }

    #[derive(serde::Deserialize)]
    struct Tokens {
        #[serde(deserialize_with = "super::integers")]
        ids: Vec<i64>,
    }

    #[test]
    fn integers_are_whole_numbers_of_any_sign_saturating() {
        let ids = |v: serde_json::Value| {
            serde_json::from_value::<Tokens>(json!({ "ids": v })).map(|t| t.ids).map_err(|e| e.to_string())
        };
        assert_eq!(ids(json!([0, 7, 3.0, -1])), Ok(vec![0, 7, 3, -1]));
        assert_eq!(ids(json!([1e30, -1e30])), Ok(vec![i64::MAX, i64::MIN]));
        assert_eq!(ids(json!([u64::MAX])), Ok(vec![i64::MAX]));
        let huge: Tokens = serde_json::from_str(r#"{"ids": [167976156296019542016, -167976156296019542016]}"#).unwrap();
        assert_eq!(huge.ids, vec![i64::MAX, i64::MIN]);
        assert!(ids(json!([1.5])).unwrap_err().contains("whole number, got 1.5"));
        for bad in [json!(["1"]), json!([null]), json!([true]), json!([[1]]), json!(3)] {
            assert!(ids(bad.clone()).is_err(), "{bad}");
        }
    }

    #[derive(serde::Deserialize)]
    struct Sized {
        #[serde(default, deserialize_with = "super::optional_size")]
        size: Option<u64>,
    }

    #[test]
    fn sizes_are_optional_whole_numbers_from_zero() {
        let size = |v: serde_json::Value| serde_json::from_value::<Sized>(json!({ "size": v })).map(|s| s.size);
        assert_eq!(size(json!(256.0)).unwrap(), Some(256));
        assert_eq!(size(json!(0)).unwrap(), Some(0));
        assert_eq!(size(json!(null)).unwrap(), None);
        assert!(size(json!(-4)).is_err());
    }
}
