//! Text to token ids for the text encoders, with the `tokenizers` crate reading a `tokenizer.json`.
//!
//! Padding and truncation are ours, not the file's: files exported by `transformers` often pad
//! every text to a fixed length (all-MiniLM-L6-v2 pads to 128), which would waste compute and
//! change nothing else, and truncate silently, while we must tell the caller when text is cut.

use rayon::prelude::*;
use tokenizers::{
    truncate_encodings, Encoding, PostProcessor, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::{Error, Result};

/// One encoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens (`[CLS]`, `[SEP]`) included.
    pub ids: Vec<u32>,
    /// Whether the text was cut to fit the limit.
    pub truncated: bool,
    /// How many tokens, special tokens included, the whole text needed.
    pub n_tokens_before_truncation: usize,
}

/// One encoded (query, document) pair: `[CLS] query [SEP] document [SEP]` for BERT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPair {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Where the second segment (token type 1) starts: token types are 0 before it and 1 from it
    /// on. A BERT pair template puts the document and its closing `[SEP]` there.
    pub second: usize,
    /// Whether either text was cut to fit the limit.
    pub truncated: bool,
    /// How many tokens, special tokens included, the whole pair needed.
    pub n_tokens_before_truncation: usize,
}

/// A tokenizer with a length limit, turning text into the ids a BERT encoder reads.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    max_seq_length: usize,
    n_special_tokens: usize,
    n_pair_special_tokens: usize,
}

impl TextTokenizer {
    /// Parses a `tokenizer.json`; sequences will hold at most `max_seq_length` tokens, special
    /// tokens included.
    ///
    /// The file's own padding and truncation are turned off.
    pub fn from_bytes(tokenizer_json: &[u8], max_seq_length: usize) -> Result<Self> {
        let mut tokenizer =
            Tokenizer::from_bytes(tokenizer_json).map_err(|e| Error::Bundle(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| Error::Bundle(format!("tokenizer.json: {e}")))?;
        let n_special_tokens = tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(false));
        let n_pair_special_tokens = tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(true));
        if max_seq_length <= n_special_tokens {
            return Err(Error::Bundle(format!(
                "max_seq_length {max_seq_length} leaves no room for text next to {n_special_tokens} special tokens"
            )));
        }
        Ok(TextTokenizer { tokenizer, max_seq_length, n_special_tokens, n_pair_special_tokens })
    }

    /// The most tokens, special tokens included, of an encoded text.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// The number of special tokens added around every text (2 for `[CLS] … [SEP]`).
    pub fn num_special_tokens(&self) -> usize {
        self.n_special_tokens
    }

    /// The size of the vocabulary, added tokens included: every id is below it.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The id of `token`, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Encodes `text` with its special tokens.
    ///
    /// Text longer than the limit is cut when `truncate` is set, keeping its start and the closing
    /// special tokens, as sentence-transformers does; otherwise it is an
    /// [`Error::InvalidInput`] naming the token count and the limit. Empty text gives the special
    /// tokens alone.
    pub fn encode(&self, text: &str, truncate: bool) -> Result<Encoded> {
        // Encoding without special tokens, cutting, then adding them is what the tokenizer's own
        // truncation does; doing it here tells us the length before the cut.
        let mut encoding = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| Error::InvalidInput(format!("cannot tokenize the text: {e}")))?;
        let n_tokens = encoding.len() + self.n_special_tokens;
        let truncated = n_tokens > self.max_seq_length;
        if truncated {
            if !truncate {
                return Err(Error::InvalidInput(format!(
                    "text has {n_tokens} tokens, more than the limit of {}",
                    self.max_seq_length
                )));
            }
            encoding.truncate(self.max_seq_length - self.n_special_tokens, 0, TruncationDirection::Right);
            // The cut-off rest is of no use and would be post-processed too.
            encoding.take_overflowing();
        }
        let encoding = self
            .tokenizer
            .post_process(encoding, None, true)
            .map_err(|e| Error::Internal(format!("tokenizer post-processing failed: {e}")))?;
        Ok(Encoded { ids: encoding.get_ids().to_vec(), truncated, n_tokens_before_truncation: n_tokens })
    }

    /// Encodes a (query, document) pair with the tokenizer's pair template, the way Hugging Face
    /// tokenizers encode `tokenizer(query, document)`: for BERT `[CLS] query [SEP] document [SEP]`
    /// with token types 0 for the query's segment and 1 for the document's.
    ///
    /// A pair longer than the limit is cut when `truncate` is set, the longer text first (the
    /// `longest_first` strategy of Hugging Face and of sentence-transformers' cross-encoders), each
    /// keeping its start; otherwise it is an [`Error::InvalidInput`] naming the token count and
    /// the limit.
    pub fn encode_pair(&self, query: &str, document: &str, truncate: bool) -> Result<EncodedPair> {
        let encode = |text: &str| {
            self.tokenizer
                .encode_fast(text, false)
                .map_err(|e| Error::InvalidInput(format!("cannot tokenize the text: {e}")))
        };
        let first = encode(query)?;
        let mut second = encode(document)?;
        // What the library's own pair encoding does before its template: the second text is type 1.
        second.set_type_ids(vec![1; second.len()]);
        let n_tokens = first.len() + second.len() + self.n_pair_special_tokens;
        let truncated = n_tokens > self.max_seq_length;
        let (first, second) = if truncated {
            if !truncate {
                return Err(Error::InvalidInput(format!(
                    "the pair has {n_tokens} tokens, more than the limit of {}",
                    self.max_seq_length
                )));
            }
            let Some(max_length) = self.max_seq_length.checked_sub(self.n_pair_special_tokens) else {
                return Err(Error::InvalidInput(format!(
                    "the limit of {} tokens leaves no room for a pair's {} special tokens",
                    self.max_seq_length, self.n_pair_special_tokens
                )));
            };
            let params = TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            };
            let (mut first, second) = truncate_encodings(first, Some(second), &params)
                .map_err(|e| Error::Internal(format!("pair truncation failed: {e}")))?;
            let mut second = second.expect("a pair truncates into a pair. This is a bug.");
            // The cut-off rests are of no use and would be post-processed too.
            first.take_overflowing();
            second.take_overflowing();
            (first, second)
        } else {
            (first, second)
        };
        let encoding = self
            .tokenizer
            .post_process(first, Some(second), true)
            .map_err(|e| Error::Internal(format!("tokenizer post-processing failed: {e}")))?;
        let second = segment_start(&encoding)?;
        Ok(EncodedPair { ids: encoding.get_ids().to_vec(), second, truncated, n_tokens_before_truncation: n_tokens })
    }

    /// Encodes several texts in parallel; fails on the first text [`TextTokenizer::encode`] refuses.
    pub fn encode_batch(&self, texts: &[&str], truncate: bool) -> Result<Vec<Encoded>> {
        texts.par_iter().map(|text| self.encode(text, truncate)).collect()
    }
}

/// Where token type 1 starts in a pair's encoding (its length when no token has it).
///
/// Encoders take a pair as one sequence plus this position, so the types must be a run of 0s
/// followed by a run of 1s; a `tokenizer.json` whose template gives anything else cannot serve
/// pairs.
fn segment_start(encoding: &Encoding) -> Result<usize> {
    let types = encoding.get_type_ids();
    let start = types.iter().position(|&t| t != 0).unwrap_or(types.len());
    if types[start..].iter().any(|&t| t != 1) {
        return Err(Error::Bundle(format!(
            "tokenizer.json: a pair's token types must be 0s then 1s, the template gives {types:?}"
        )));
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing_text::tiny_tokenizer_json;

    fn tokenizer(max: usize) -> TextTokenizer {
        TextTokenizer::from_bytes(tiny_tokenizer_json().as_bytes(), max).unwrap()
    }

    fn id(t: &TextTokenizer, token: &str) -> u32 {
        t.token_to_id(token).unwrap()
    }

    #[test]
    fn encodes_with_special_tokens_and_without_the_files_padding() {
        let t = tokenizer(16);
        let (cls, sep) = (id(&t, "[CLS]"), id(&t, "[SEP]"));
        let enc = t.encode("The cat sat.", false).unwrap();
        let expected = vec![cls, id(&t, "the"), id(&t, "cat"), id(&t, "sat"), id(&t, "."), sep];
        assert_eq!(enc, Encoded { ids: expected, truncated: false, n_tokens_before_truncation: 6 });
        assert_eq!(t.num_special_tokens(), 2);
        assert_eq!(t.max_seq_length(), 16);
    }

    #[test]
    fn empty_and_blank_text_give_the_special_tokens() {
        let t = tokenizer(16);
        let only = vec![id(&t, "[CLS]"), id(&t, "[SEP]")];
        for text in ["", "   ", "\n\t "] {
            let enc = t.encode(text, false).unwrap();
            assert_eq!(enc.ids, only, "{text:?}");
            assert_eq!(enc.n_tokens_before_truncation, 2);
        }
    }

    #[test]
    fn truncation_keeps_the_start_and_the_final_sep() {
        let t = tokenizer(5);
        let text = "the cat sat on the mat";
        let enc = t.encode(text, true).unwrap();
        let expected = vec![id(&t, "[CLS]"), id(&t, "the"), id(&t, "cat"), id(&t, "sat"), id(&t, "[SEP]")];
        assert_eq!(enc, Encoded { ids: expected, truncated: true, n_tokens_before_truncation: 8 });
        // Exactly at the limit is not truncation.
        let enc = t.encode("the cat sat", false).unwrap();
        assert!(!enc.truncated);
        assert_eq!(enc.ids.len(), 5);
    }

    #[test]
    fn too_long_text_without_truncation_names_count_and_limit() {
        let t = tokenizer(5);
        match t.encode("the cat sat on the mat", false) {
            Err(Error::InvalidInput(msg)) => {
                assert_eq!(msg, "text has 8 tokens, more than the limit of 5");
            }
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn batch_matches_single_and_fails_as_a_whole() {
        let t = tokenizer(6);
        let texts = ["hello world", "", "the dog sat on the mat"];
        let batch = t.encode_batch(&texts, true).unwrap();
        for (text, enc) in texts.iter().zip(&batch) {
            assert_eq!(enc, &t.encode(text, true).unwrap());
        }
        assert!(batch[2].truncated);
        assert!(t.encode_batch(&texts, false).is_err());
    }

    #[track_caller]
    fn check_pair(max: usize, query: &str, document: &str, expect: (&[&str], usize, bool, usize)) {
        let t = tokenizer(max);
        let enc = t.encode_pair(query, document, true).unwrap();
        let ids: Vec<u32> = expect.0.iter().map(|token| id(&t, token)).collect();
        let (_, second, truncated, n_tokens) = expect;
        assert_eq!(enc, EncodedPair { ids, second, truncated, n_tokens_before_truncation: n_tokens });
        match t.encode_pair(query, document, false) {
            Ok(whole) => assert!(!truncated && whole == enc),
            Err(Error::InvalidInput(msg)) => {
                assert!(truncated);
                assert_eq!(msg, format!("the pair has {n_tokens} tokens, more than the limit of {max}"));
            }
            Err(other) => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn pairs_follow_the_template_with_the_document_as_type_1() {
        check_pair(
            16,
            "the cat",
            "a dog sat",
            (&["[CLS]", "the", "cat", "[SEP]", "a", "dog", "sat", "[SEP]"], 4, false, 8),
        );
        check_pair(16, "", "", (&["[CLS]", "[SEP]", "[SEP]"], 2, false, 3));
        // Exactly at the limit is not truncation.
        check_pair(6, "the cat", "dog", (&["[CLS]", "the", "cat", "[SEP]", "dog", "[SEP]"], 4, false, 6));
    }

    #[test]
    fn pair_truncation_cuts_the_longer_text_first() {
        // Two tokens too many, both from the document.
        let long_document = (&["[CLS]", "cat", "[SEP]", "the", "dog", "sat", "[SEP]"][..], 3, true, 9);
        check_pair(7, "cat", "the dog sat on the", long_document);
        // Both long: each keeps half of the room, and its start.
        let both = (&["[CLS]", "the", "cat", "[SEP]", "a", "dog", "[SEP]"][..], 4, true, 11);
        check_pair(7, "the cat sat on", "a dog run fast", both);
    }

    #[test]
    fn the_tokenizer_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TextTokenizer>();
    }

    #[test]
    fn bad_files_and_limits_are_bundle_errors() {
        assert!(matches!(TextTokenizer::from_bytes(b"{", 8), Err(Error::Bundle(m)) if m.starts_with("tokenizer.json")));
        assert!(matches!(
            TextTokenizer::from_bytes(tiny_tokenizer_json().as_bytes(), 2),
            Err(Error::Bundle(m)) if m.contains("max_seq_length 2")
        ));
    }
}
