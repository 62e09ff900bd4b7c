//! Images in requests and answers, shared by every route that takes or returns them.
//!
//! In: a JSON body whose `inputs` are base64 PNG/JPEG files or pixel arrays, or one raw
//! `image/png` / `image/jpeg` body, decoded within the server's pixel budgets and off the async
//! workers when the work is large ([`read_images`]). Out: a PNG answered raw when `Accept` asks for
//! it ([`wants_png`], [`png_response`]), base64 in JSON otherwise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde::de::DeserializeOwned;
use tandem_runtime::image::{GrayImage, ImageHeader};

use crate::error::{ApiError, ErrorType};
use crate::extract::Json as ApiJson;
use crate::state::AppState;
use crate::wire::ClassifyInput;

/// A JSON request body that carries its images as `inputs`.
pub(crate) trait ImageInputs: DeserializeOwned + Send + 'static {
    /// The images to decode, in answer order.
    fn inputs(&self) -> &[ClassifyInput];
}

/// Reads a request's images: the `inputs` of a JSON body of type `T` (returned alongside, for its
/// other fields), or one raw PNG or JPEG body (`None`). The content type decides which.
pub(crate) async fn read_images<T: ImageInputs>(
    state: &AppState,
    request: Request,
) -> Result<(Vec<GrayImage>, Option<T>), ApiError> {
    let budget = ImageBudget::of(state);
    match body_kind(&request)? {
        BodyKind::RawImage => {
            let bytes = Bytes::from_request(request, state).await?;
            let images = blocking(bytes.len(), move |_| decode_raw(&bytes, budget)).await?;
            Ok((images, None))
        }
        BodyKind::Json => {
            let ApiJson(body) = ApiJson::<T>::from_request(request, state).await?;
            validate(body.inputs(), state.config.max_inputs)?;
            let units = body.inputs().iter().map(ClassifyInput::size).sum();
            let (images, body) = blocking(units, move |cancelled| {
                let positioned: Vec<(usize, &ClassifyInput)> = body.inputs().iter().enumerate().collect();
                Ok((decode_inputs(&positioned, budget, cancelled)?, body))
            })
            .await?;
            Ok((images, Some(body)))
        }
    }
}

/// Decodes the images among a JSON request's `inputs`, each given with its position there (which
/// errors name), within the server's pixel budgets and off the async workers when the work is
/// large: for routes whose inputs mix images with other things (texts, for an `image_text` model's
/// embed). The caller has checked the number of inputs.
pub(crate) async fn decode_positioned(
    state: &AppState,
    inputs: Vec<(usize, ClassifyInput)>,
) -> Result<Vec<GrayImage>, ApiError> {
    let budget = ImageBudget::of(state);
    let units = inputs.iter().map(|(_, input)| input.size()).sum();
    blocking(units, move |cancelled| {
        let positioned: Vec<(usize, &ClassifyInput)> = inputs.iter().map(|(i, input)| (*i, input)).collect();
        decode_inputs(&positioned, budget, cancelled)
    })
    .await
}

/// Whether `Accept` asks for `image/png` (or `image/*`) at least as much as for JSON. `*/*` counts
/// for neither, so that clients sending it by default get JSON.
pub(crate) fn wants_png(headers: &HeaderMap) -> bool {
    let (mut png, mut json) = (0.0_f32, 0.0_f32);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "image/png" | "image/*" => png = png.max(q),
                "application/json" | "application/*" => json = json.max(q),
                _ => {}
            }
        }
    }
    png > 0.0 && png >= json
}

/// A PNG file as the whole answer, `Content-Type: image/png`.
pub(crate) fn png_response(png: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))], png).into_response()
}

/// A PNG file in standard base64, as JSON answers carry it.
pub(crate) fn png_base64(png: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(png)
}

/// Standard base64 that also accepts missing padding, which some clients strip.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How the body arrived, decided by its content type.
enum BodyKind {
    Json,
    RawImage,
}

/// Picks the body form from `Content-Type`, ignoring parameters such as `charset`.
fn body_kind(request: &Request) -> Result<BodyKind, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match content_type.as_deref() {
        Some("image/png" | "image/jpeg") => Ok(BodyKind::RawImage),
        Some(ct) if ct == "application/json" || ct.ends_with("+json") => Ok(BodyKind::Json),
        Some(ct) => Err(ApiError::new(
            ErrorType::UnsupportedMediaType,
            format!("content type {ct:?} is not accepted: send application/json, image/png or image/jpeg"),
        )),
        None => Err(ApiError::new(
            ErrorType::UnsupportedMediaType,
            "missing content type: send application/json, image/png or image/jpeg".to_owned(),
        )),
    }
}

/// Cheap count checks, done before any decoding so that a bad request costs little. The shape of
/// each input (exactly one of `image` or `pixels`) is already enforced by its type.
fn validate(inputs: &[ClassifyInput], max_inputs: usize) -> Result<(), ApiError> {
    if inputs.is_empty() {
        return Err(ApiError::new(ErrorType::InvalidInput, "inputs must hold at least one input".to_owned()));
    }
    if inputs.len() > max_inputs {
        return Err(ApiError::new(
            ErrorType::TooManyInputs,
            format!("{} inputs sent, at most {max_inputs} are accepted per request", inputs.len()),
        ));
    }
    Ok(())
}

/// How many pixels a request's images may decode to: per image, and all together.
#[derive(Debug, Clone, Copy)]
struct ImageBudget {
    per_image: u64,
    per_request: u64,
}

impl ImageBudget {
    fn of(state: &AppState) -> ImageBudget {
        ImageBudget { per_image: state.config.max_image_pixels, per_request: state.config.max_request_pixels }
    }

    #[cfg(test)]
    fn unlimited() -> ImageBudget {
        ImageBudget { per_image: u64::MAX, per_request: u64::MAX }
    }
}

fn decode_raw(bytes: &[u8], budget: ImageBudget) -> Result<Vec<GrayImage>, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::new(ErrorType::InvalidImage, "the request body is empty".to_owned()));
    }
    Ok(vec![GrayImage::decode_within(bytes, budget.per_image.min(budget.per_request))?])
}

/// One input after the cheap first pass: encoded bytes whose header has been read, or pixels.
enum Undecoded<'a> {
    Encoded(Vec<u8>),
    Pixels(&'a [Vec<f64>]),
}

/// Decodes every input, naming the offending one in errors by its position in the request. A
/// first pass reads only base64 and image headers, so that a request whose images declare more
/// pixels than the budget is refused before any is decoded; the second pass decodes, and stops
/// early once `cancelled` is set (the request timed out or the client went away).
fn decode_inputs(
    inputs: &[(usize, &ClassifyInput)],
    budget: ImageBudget,
    cancelled: &AtomicBool,
) -> Result<Vec<GrayImage>, ApiError> {
    let mut total: u64 = 0;
    let mut pending = Vec::with_capacity(inputs.len());
    for &(i, input) in inputs {
        let (item, pixels) = match input {
            ClassifyInput::Image(encoded) => {
                let bytes = BASE64.decode(encoded.trim()).map_err(|e| {
                    at_index(i, ApiError::new(ErrorType::InvalidImage, format!("image is not valid base64: {e}")))
                })?;
                let header = ImageHeader::read(&bytes).map_err(|e| at_index(i, e.into()))?;
                header.check(budget.per_image).map_err(|e| at_index(i, e.into()))?;
                (Undecoded::Encoded(bytes), header.pixels())
            }
            ClassifyInput::Pixels(rows) => {
                (Undecoded::Pixels(rows), rows.len() as u64 * rows.first().map_or(0, Vec::len) as u64)
            }
        };
        total = total.saturating_add(pixels);
        if total > budget.per_request {
            return Err(ApiError::new(
                ErrorType::ImageTooLarge,
                format!(
                    "inputs[0..={i}] hold {total} pixels, more than the {} accepted per request",
                    budget.per_request
                ),
            ));
        }
        pending.push((i, item));
    }
    let mut images = Vec::with_capacity(pending.len());
    for (i, item) in pending {
        if cancelled.load(Ordering::Relaxed) {
            return Err(ApiError::of(ErrorType::Timeout));
        }
        let image = match item {
            Undecoded::Encoded(bytes) => GrayImage::decode_within(&bytes, budget.per_image),
            Undecoded::Pixels(rows) => GrayImage::from_rows(rows),
        };
        images.push(image.map_err(|e| at_index(i, e.into()))?);
    }
    Ok(images)
}

fn at_index(i: usize, err: ApiError) -> ApiError {
    match err.error_type() {
        kind @ (ErrorType::InvalidImage | ErrorType::InvalidInput | ErrorType::ImageTooLarge) => {
            ApiError::new(kind, format!("inputs[{i}]: {}", err.message()))
        }
        _ => err,
    }
}

/// Runs CPU-bound decoding off the async workers, so that a large batch of JPEGs does not stall
/// other connections. `f` is handed a flag that turns true when the request is dropped (its
/// deadline passed, or the client left), so that it can stop instead of decoding for nobody.
/// Work of at most [`tandem_runtime::INLINE_PREPARE_UNITS`] (`units`: pixels sent, or bytes of
/// encoded images) runs inline: the pool's round trip would cost more than the work.
async fn blocking<T, F>(units: usize, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&AtomicBool) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    if units <= tandem_runtime::INLINE_PREPARE_UNITS {
        return f(&AtomicBool::new(false));
    }
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancelled.clone());
    tokio::task::spawn_blocking(move || f(&cancelled))
        .await
        .map_err(|e| ApiError::new(ErrorType::Internal, format!("decode task failed: {e}")))?
}

/// Sets its flag when dropped, including when the request's future is dropped mid-await.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixels() -> ClassifyInput {
        ClassifyInput::Pixels(vec![vec![0.0, 1.0]])
    }

    /// [`decode_inputs`] over inputs at their own positions.
    fn decode_inputs(
        inputs: &[ClassifyInput],
        budget: ImageBudget,
        cancelled: &AtomicBool,
    ) -> Result<Vec<GrayImage>, ApiError> {
        let positioned: Vec<(usize, &ClassifyInput)> = inputs.iter().enumerate().collect();
        super::decode_inputs(&positioned, budget, cancelled)
    }

    #[test]
    fn validation_rejects_empty_and_too_many() {
        assert_eq!(validate(&[], 4).unwrap_err().error_type(), ErrorType::InvalidInput);
        assert_eq!(validate(&vec![pixels(); 5], 4).unwrap_err().error_type(), ErrorType::TooManyInputs);
        assert!(validate(&[pixels()], 1).is_ok());
    }

    #[test]
    fn bad_base64_is_an_invalid_image_naming_its_index() {
        let inputs = vec![pixels(), ClassifyInput::Image("***".into())];
        let err = decode_inputs(&inputs, ImageBudget::unlimited(), &AtomicBool::new(false)).unwrap_err();
        assert_eq!(err.error_type(), ErrorType::InvalidImage);
        assert!(err.to_string().starts_with("inputs[1]: "), "{err}");
        let message = err.body().error.message;
        assert!(!message.ends_with('.'), "{message}");
    }

    fn png_input(width: u32, height: u32) -> ClassifyInput {
        let mut bytes = Vec::new();
        image::GrayImage::new(width, height)
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
            .expect("encodes");
        ClassifyInput::Image(BASE64.encode(bytes))
    }

    #[test]
    fn image_budgets_are_checked_from_headers_per_image_and_per_request() {
        let budget = ImageBudget { per_image: 100 * 100, per_request: 3 * 64 * 64 };
        let fresh = AtomicBool::new(false);
        let big = decode_inputs(&[pixels(), png_input(200, 100)], budget, &fresh).unwrap_err();
        assert_eq!(big.error_type(), ErrorType::ImageTooLarge);
        assert!(big.to_string().starts_with("inputs[1]: 200x100"), "{big}");
        let many = vec![png_input(64, 64); 4];
        let sum = decode_inputs(&many, budget, &fresh).unwrap_err();
        assert_eq!(sum.error_type(), ErrorType::ImageTooLarge);
        assert!(sum.to_string().contains("inputs[0..=3] hold 16384 pixels"), "{sum}");
        assert_eq!(decode_inputs(&many[..3], budget, &fresh).expect("within budget").len(), 3);
        let cancelled = decode_inputs(&many[..3], budget, &AtomicBool::new(true)).unwrap_err();
        assert_eq!(cancelled.error_type(), ErrorType::Timeout);
    }

    #[test]
    fn unpadded_base64_is_accepted() {
        assert_eq!(BASE64.decode("YWI").expect("decodes"), b"ab");
        assert_eq!(BASE64.decode("YWI=").expect("decodes"), b"ab");
    }

    #[track_caller]
    fn check(accept: &[&str], expect: bool) {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(header::ACCEPT, HeaderValue::from_str(value).expect("a header value"));
        }
        assert_eq!(wants_png(&headers), expect, "{accept:?}");
    }

    #[test]
    fn accept_picks_png_only_when_asked_and_not_outweighed_by_json() {
        check(&[], false);
        check(&["*/*"], false);
        check(&["application/json"], false);
        check(&["image/png"], true);
        check(&["image/*"], true);
        check(&["IMAGE/PNG"], true);
        check(&["image/png, */*;q=0.8"], true);
        check(&["application/json", "image/png"], true);
        check(&["application/json, image/png;q=0.5"], false);
        check(&["image/png;q=0.9, application/json;q=0.2"], true);
        check(&["image/png;q=0"], false);
        check(&["image/webp"], false);
    }
}
