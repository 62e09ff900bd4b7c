//! Reading optional counts (`dimensions`, `top_n`) from JSON as the OpenAPI document states them:
//! whole numbers of at least 1.
//!
//! JSON Schema counts `2.0` as an integer, so whole-number floats are served. Values past `usize`
//! saturate rather than fail: the bound that matters (a model's width, a document count) is
//! checked later against the model, with a message that names it.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

fn too_small(shown: impl fmt::Display) -> String {
    format!("must be a whole number of at least 1, got {shown}")
}

impl Visitor<'_> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a whole number of at least 1")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Count, E> {
        if value == 0 {
            return Err(E::custom(too_small(value)));
        }
        Ok(Count(usize::try_from(value).unwrap_or(usize::MAX)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Count, E> {
        let unsigned = u64::try_from(value).map_err(|_| E::custom(too_small(value)))?;
        self.visit_u64(unsigned)
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<Count, E> {
        self.visit_u64(u64::try_from(value).unwrap_or(u64::MAX))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<Count, E> {
        if value < 1 {
            return Err(E::custom(too_small(value)));
        }
        self.visit_u128(value.unsigned_abs())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Count, E> {
        if value.fract() != 0.0 || value < 1.0 {
            return Err(E::custom(too_small(value)));
        }
        // `as` saturates, which is the intent for huge values.
        Ok(Count(value as usize))
    }
}

/// An optional count in a JSON body; `null` means the same as leaving it out.
pub(crate) fn optional_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    Ok(Option::<Count>::deserialize(deserializer)?.map(|c| c.0))
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
}
