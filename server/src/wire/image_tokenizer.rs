//! JSON shapes of the image tokenizer routes, `POST /v1/models/{id}/tokenize` and
//! `POST /v1/models/{id}/detokenize`. A tokenizer's `classify` answers in the classify route's
//! shapes.
//!
//! Tokens travel flat, row-major over the code grid with the depth innermost: token
//! `((r·width) + c)·depth + d` is depth `d` at row `r`, column `c`; `shape` names the grid. A
//! tokenize answer's entry can be sent back to detokenize as it is.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ClassifyInput;

/// JSON body of `POST /v1/models/{id}/tokenize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"inputs": [{"pixels": [[0, 255], [255, 0]]}]}))]
pub struct TokenizeRequest {
    /// Images to tokenize, answered in the same order; at least one, at most the server's
    /// `max_inputs` (413 beyond it). Images of another size than the model's input are resized.
    #[schema(min_items = 1)]
    pub inputs: Vec<ClassifyInput>,
}

/// The grid a list of tokens covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"height": 7, "width": 7, "depth": 2}))]
pub struct TokenShape {
    /// Rows of the code grid.
    #[serde(deserialize_with = "crate::whole::dimension")]
    pub height: usize,
    /// Columns of the code grid.
    #[serde(deserialize_with = "crate::whole::dimension")]
    pub width: usize,
    /// Codes per position (the quantizer's depth).
    #[serde(deserialize_with = "crate::whole::dimension")]
    pub depth: usize,
}

/// The tokens of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageTokens {
    /// The stream the decoder reads: `height × width × depth` codebook ids, what detokenize takes.
    pub pixel_tokens: Vec<u32>,
    /// The stream the classification head reads, on the same grid. Absent (not `null`) for a
    /// tokenizer without a semantic stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_tokens: Option<Vec<u32>>,
    /// The grid both streams cover.
    pub shape: TokenShape,
}

/// Answer of `POST /v1/models/{id}/tokenize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "model": "digits-tokenizer@1",
    "tokens": [{"pixel_tokens": [12, 40, 3], "semantic_tokens": [7, 7, 61], "shape": {"height": 7, "width": 7, "depth": 2}}]
}))]
pub struct TokenizeResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// One entry per input, in request order.
    pub tokens: Vec<ImageTokens>,
}

/// Body of `POST /v1/models/{id}/detokenize`: pixel tokens and their grid, as tokenize answers them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"pixel_tokens": [12, 40, 3], "shape": {"height": 7, "width": 7, "depth": 2}}))]
pub struct DetokenizeRequest {
    /// Codebook ids, `height × width × depth` of them, each from 0 to the codebook's size less one
    /// (422 otherwise).
    #[serde(deserialize_with = "crate::whole::integers")]
    pub pixel_tokens: Vec<i64>,
    /// The grid the tokens cover; it must be the model's (422 otherwise).
    pub shape: TokenShape,
    /// Ignored: accepted so that an entry of a tokenize answer can be sent back as it is. Decoding
    /// reads the pixel tokens alone.
    #[serde(default, deserialize_with = "crate::whole::optional_integers", skip_serializing_if = "Option::is_none")]
    pub semantic_tokens: Option<Vec<i64>>,
}

/// Answer of `POST /v1/models/{id}/detokenize` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"model": "digits-tokenizer@1", "png_base64": "iVBORw0KGgo..."}))]
pub struct DetokenizeResponse {
    /// `name@version` of the model that answered.
    pub model: String,
    /// The decoded image as a grayscale PNG file of the model's input size, in standard base64.
    pub png_base64: String,
}

impl From<tandem_runtime::TokenGrid> for TokenShape {
    fn from(grid: tandem_runtime::TokenGrid) -> Self {
        TokenShape { height: grid.height, width: grid.width, depth: grid.depth }
    }
}

impl From<TokenShape> for tandem_runtime::TokenGrid {
    fn from(shape: TokenShape) -> Self {
        tandem_runtime::TokenGrid { height: shape.height, width: shape.width, depth: shape.depth }
    }
}

impl From<&tandem_runtime::ImageTokens> for ImageTokens {
    fn from(tokens: &tandem_runtime::ImageTokens) -> Self {
        ImageTokens {
            pixel_tokens: tokens.pixel_tokens.clone(),
            semantic_tokens: tokens.semantic_tokens.clone(),
            shape: tokens.grid.into(),
        }
    }
}

impl From<tandem_runtime::TokenizeResponse> for TokenizeResponse {
    fn from(res: tandem_runtime::TokenizeResponse) -> Self {
        TokenizeResponse {
            model: res.model,
            tokens: res.tokens.iter().map(|t| ImageTokens::from(t.as_ref())).collect(),
        }
    }
}

impl From<ImageTokens> for DetokenizeRequest {
    fn from(tokens: ImageTokens) -> Self {
        DetokenizeRequest {
            pixel_tokens: tokens.pixel_tokens.into_iter().map(i64::from).collect(),
            shape: tokens.shape,
            semantic_tokens: tokens.semantic_tokens.map(|ids| ids.into_iter().map(i64::from).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn detokenize(value: serde_json::Value) -> Result<DetokenizeRequest, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn a_tokenize_entry_is_a_detokenize_request() {
        let entry = ImageTokens {
            pixel_tokens: vec![1, 2],
            semantic_tokens: Some(vec![3, 4]),
            shape: TokenShape { height: 1, width: 1, depth: 2 },
        };
        let sent = serde_json::to_value(&entry).expect("serializes");
        assert_eq!(
            sent,
            json!({"pixel_tokens": [1, 2], "semantic_tokens": [3, 4], "shape": {"height": 1, "width": 1, "depth": 2}})
        );
        assert_eq!(detokenize(sent).expect("the entry as it is"), DetokenizeRequest::from(entry));
        let pixel_only = ImageTokens {
            semantic_tokens: None,
            ..ImageTokens::from(&tandem_runtime::ImageTokens {
                pixel_tokens: vec![5],
                semantic_tokens: None,
                grid: tandem_runtime::TokenGrid { height: 1, width: 1, depth: 1 },
            })
        };
        let value = serde_json::to_value(&pixel_only).expect("serializes");
        assert!(value.get("semantic_tokens").is_none(), "absent, not null: {value}");
    }

    #[test]
    fn detokenize_requests_take_whole_numbers_and_refuse_other_fields() {
        let shape = json!({"height": 1, "width": 1, "depth": 2.0});
        let parsed = detokenize(json!({"pixel_tokens": [-1, 70.0], "shape": shape})).expect("whole numbers");
        assert_eq!((parsed.pixel_tokens, parsed.shape.depth), (vec![-1, 70], 2));
        for (body, says) in [
            (json!({"pixel_tokens": [1.5], "shape": shape}), "whole number"),
            (json!({"pixel_tokens": ["1"], "shape": shape}), "whole number"),
            (json!({"pixel_tokens": [1], "shape": {"height": -1, "width": 1, "depth": 1}}), "at least 0"),
            (json!({"pixel_tokens": [1], "shape": {"height": 1, "width": 1}}), "missing field `depth`"),
            (json!({"pixel_tokens": [1]}), "missing field `shape`"),
            (json!({"pixel_tokens": [1], "shape": shape, "grid": shape}), "unknown field"),
        ] {
            let err = detokenize(body.clone()).expect_err(&body.to_string());
            assert!(err.contains(says), "{body}: {err}");
        }
    }
}
