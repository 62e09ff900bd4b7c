//! Reading `top_k` from a JSON body or a query string, with the range the OpenAPI document states.
//!
//! JSON Schema counts `2.0` as an integer, so a client whose JSON library writes whole numbers as
//! floats is within the contract and must be served. Values outside `1..=MAX_TOP_K` (huge ones
//! included) are refused here, during deserialization, so that both sources of `top_k` are
//! validated even when the body's value wins.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

/// Most predictions per input a request may ask for. Anything above the model's label count is
/// capped anyway; the bound exists so that the documented range is finite and checkable.
pub const MAX_TOP_K: usize = 1000;

/// The one wording both sources use, so a client sees the same rule whichever it broke. It does
/// not name the field: the extractors prefix the error with its path (`top_k: ...`).
fn out_of_range(shown: impl fmt::Display) -> String {
    format!("must be a whole number from 1 to {MAX_TOP_K}, got {shown}")
}

/// A whole number, as JSON writes it, within the documented range.
fn checked_float(value: f64) -> Result<usize, String> {
    if value.fract() != 0.0 || !(1.0..=MAX_TOP_K as f64).contains(&value) {
        return Err(out_of_range(value));
    }
    Ok(value as usize)
}

fn checked_int(value: u64) -> Result<usize, String> {
    usize::try_from(value).ok().filter(|k| (1..=MAX_TOP_K).contains(k)).ok_or_else(|| out_of_range(value))
}

/// A JSON `top_k`: an integer or a whole-number float; strings and other types are refused.
struct JsonTopK(usize);

impl<'de> Deserialize<'de> for JsonTopK {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonTopKVisitor)
    }
}

struct JsonTopKVisitor;

impl Visitor<'_> for JsonTopKVisitor {
    type Value = JsonTopK;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a whole number from 1 to {MAX_TOP_K}")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<JsonTopK, E> {
        checked_int(value).map(JsonTopK).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<JsonTopK, E> {
        let unsigned = u64::try_from(value).map_err(|_| E::custom(out_of_range(value)))?;
        self.visit_u64(unsigned)
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<JsonTopK, E> {
        let small = u64::try_from(value).map_err(|_| E::custom(out_of_range(value)))?;
        self.visit_u64(small)
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<JsonTopK, E> {
        let small = i64::try_from(value).map_err(|_| E::custom(out_of_range(value)))?;
        self.visit_i64(small)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<JsonTopK, E> {
        checked_float(value).map(JsonTopK).map_err(E::custom)
    }
}

/// `top_k` in a JSON body; `null` means the same as leaving it out.
pub(crate) fn from_json<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    Ok(Option::<JsonTopK>::deserialize(deserializer)?.map(|k| k.0))
}

/// `top_k` in a query string, where every value is text: digits, or a whole-number float written
/// the way JSON would (`2.0`, `1e2`), within the documented range.
pub(crate) fn from_query<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_query(&text).map(Some).map_err(de::Error::custom)
}

fn parse_query(text: &str) -> Result<usize, String> {
    // Rust's parsers also take `+4`, `inf` and `NaN`; JSON numbers, the spec's notion, have none.
    let json_like =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-'));
    let parsed = match text.parse::<u64>() {
        Ok(value) if json_like => checked_int(value),
        _ if json_like => text.parse::<f64>().map_err(|e| e.to_string()).and_then(checked_float),
        _ => Err(String::new()),
    };
    parsed.map_err(|_| out_of_range(format!("{text:?}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "from_json")]
        top_k: Option<usize>,
    }

    fn json_top_k(value: serde_json::Value) -> Result<Option<usize>, String> {
        serde_json::from_value::<Body>(json!({ "top_k": value })).map(|b| b.top_k).map_err(|e| e.to_string())
    }

    #[test]
    fn json_accepts_integers_and_whole_floats_in_range() {
        assert_eq!(json_top_k(json!(3)), Ok(Some(3)));
        assert_eq!(json_top_k(json!(2.0)), Ok(Some(2)));
        assert_eq!(json_top_k(json!(1000)), Ok(Some(MAX_TOP_K)));
        assert_eq!(json_top_k(json!(null)), Ok(None));
        let missing = serde_json::from_value::<Body>(json!({})).expect("top_k is optional");
        assert_eq!(missing.top_k, None);
    }

    #[test]
    fn json_refuses_zero_negatives_fractions_huge_values_and_strings() {
        for value in [json!(0), json!(-1), json!(2.5), json!(1001), json!(1e30), json!(u64::MAX), json!("3")] {
            let err = json_top_k(value.clone()).expect_err(&value.to_string());
            assert!(err.starts_with("must be a whole number") || err.starts_with("invalid type"), "{value}: {err}");
        }
        let huge = serde_json::from_str::<Body>(r#"{"top_k": 45486222980766492524544}"#);
        assert!(huge.is_err(), "a number above u64 must be refused: {huge:?}");
    }

    #[test]
    fn query_accepts_digits_and_whole_floats_in_range() {
        assert_eq!(parse_query("7"), Ok(7));
        assert_eq!(parse_query("2.0"), Ok(2));
        assert_eq!(parse_query("1e2"), Ok(100));
    }

    #[test]
    fn query_refuses_out_of_range_and_non_numbers() {
        for text in ["0", "1001", "45486222980766492524544", "-3", "2.5", "inf", "NaN", "+4", "", "abc", "true"] {
            let err = parse_query(text).expect_err(text);
            assert!(err.starts_with("must be a whole number from 1 to 1000"), "{text}: {err}");
            assert!(!err.ends_with('.'), "{err}");
        }
    }
}
