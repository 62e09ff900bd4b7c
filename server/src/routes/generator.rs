//! Image generation: `POST /v1/models/{id}/generate` for the `diffusion` and `consistency`
//! families, answering PNGs in JSON (base64), or one raw PNG when the client asks for `image/png`.
//!
//! Sampling holds a model's worker for `n × steps` network evaluations, so both are capped by the
//! server's `max_generate_images` and `max_generate_steps` before anything is queued.

use axum::extract::{FromRequest, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tandem_runtime::diffusion::DualFast;
use tandem_runtime::families::generator::{default_sampler, default_steps};
use tandem_runtime::ModelInfo;

use crate::error::{ApiError, ErrorType};
use crate::extract::{Json as ApiJson, Path};
use crate::images::{png_base64, png_response, wants_png};
use crate::state::AppState;
use crate::wire::generator::{DualFastOptions, GenerateRequest, GenerateResponse, GeneratedImage};

/// The kinds this module serves.
pub(crate) const KINDS: &[&str] = &["diffusion", "consistency"];

/// The routes that serve generative models, as named in 422 answers to other kinds' models. The
/// Open Inference Protocol maps no generative family.
pub(crate) const ROUTES: &[&str] = &["POST /v1/models/{id}/generate"];

/// Errors the generate route answers with besides the global and `/v1` ones.
pub(crate) const GENERATE_ERRORS: &[ErrorType] = &[
    ErrorType::BadRequest,
    ErrorType::InvalidJson,
    ErrorType::NotFound,
    ErrorType::PayloadTooLarge,
    ErrorType::UnsupportedMediaType,
    ErrorType::InvalidInput,
    ErrorType::Overloaded,
    ErrorType::Unavailable,
];

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/models/{id}/generate", post(generate))
}

/// Generates images with a `diffusion` or `consistency` model.
///
/// Every field is optional. A diffusion model samples with an ODE solver (`sampler`, default
/// `dpmpp2m`, 10 `steps`), optionally wrapped in DualFast, with classifier-free `guidance`; a
/// consistency model takes the sampler `consistency` (1 step by default) and optional `sigmas`.
/// `n` is at most the server's `max_generate_images` and `steps` at most its `max_generate_steps`
/// (422 beyond). Images are PNGs in standard base64; with `n` = 1 and `Accept: image/png` (not
/// preferring JSON) the answer is the PNG itself.
#[utoipa::path(
    post,
    path = "/v1/models/{id}/generate",
    tag = "inference",
    params(("id" = String, Path, description = "`name@version`, or `name` for its highest version")),
    request_body = GenerateRequest,
    responses((
        status = 200,
        description = "the images, as JSON, or one raw PNG when `n` is 1 and `Accept` asks for `image/png`",
        content((GenerateResponse = "application/json"), ("image/png"))
    ))
)]
pub(crate) async fn generate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let raw_png = wants_png(request.headers());
    let (state, id) = (&state, id.as_str());
    super::on_model_of(state, id, KINDS, |info| async move {
        let ApiJson(body) = ApiJson::<GenerateRequest>::from_request(request, state).await?;
        let request = runtime_request(body, &info, state)?;
        let n = request.n;
        let res = state.runtime.generate(id, request).await?;
        if raw_png && n == 1 {
            if let Some(image) = res.images.first() {
                return Ok(png_response(image.png.clone()));
            }
        }
        let images = res.images.iter().map(|image| GeneratedImage { png_base64: png_base64(&image.png) }).collect();
        Ok(Json(GenerateResponse { model: res.model, nfe: res.nfe, images }).into_response())
    })
    .await
}

/// The runtime's request: the kind's defaults filled in, names parsed, and the server's limits
/// checked, so that no request past them reaches a model's queue.
fn runtime_request(
    body: GenerateRequest,
    info: &ModelInfo,
    state: &AppState,
) -> Result<tandem_runtime::GenerateRequest, ApiError> {
    let n = body.n.unwrap_or(1);
    let max_images = state.config.max_generate_images;
    if n > max_images {
        return Err(ApiError::new(
            ErrorType::InvalidInput,
            format!("n is {n}, more than the {max_images} images the server's max_generate_images allows per request"),
        ));
    }
    let steps = body.steps.unwrap_or_else(|| default_steps(&info.kind, body.sigmas.as_deref()));
    let max_steps = state.config.max_generate_steps;
    if steps > max_steps {
        return Err(ApiError::new(
            ErrorType::InvalidInput,
            format!("steps is {steps}, more than the {max_steps} the server's max_generate_steps allows"),
        ));
    }
    let class = body
        .class
        .map(|class| {
            u32::try_from(class)
                .map_err(|_| ApiError::new(ErrorType::InvalidInput, format!("class {class} is out of range")))
        })
        .transpose()?;
    Ok(tandem_runtime::GenerateRequest {
        class,
        n,
        steps,
        sampler: body.sampler.unwrap_or_else(|| default_sampler(&info.kind).to_owned()),
        seed: body.seed.unwrap_or(0),
        guidance: body.guidance,
        dualfast: body.dualfast.map(dualfast).transpose()?,
        sigmas: body.sigmas,
    })
}

/// DualFast from its wire options, each absent one at its default.
fn dualfast(options: DualFastOptions) -> Result<DualFast, ApiError> {
    Ok(DualFast::from_names(
        options.tau.as_deref(),
        options.c_max,
        options.schedule.as_deref(),
        options.space.as_deref(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dualfast_options_fill_in_defaults_and_refuse_unknown_names() {
        assert_eq!(dualfast(DualFastOptions::default()).expect("defaults"), DualFast::default());
        let options = DualFastOptions { tau: Some("previous".into()), c_max: Some(0.3), ..Default::default() };
        let parsed = dualfast(options).expect("valid names");
        assert_eq!((parsed.tau.as_str(), parsed.c_max), ("previous", 0.3));
        assert_eq!(parsed.schedule, DualFast::default().schedule);
        let err = dualfast(DualFastOptions { space: Some("latent".into()), ..Default::default() }).unwrap_err();
        assert_eq!(err.error_type(), ErrorType::InvalidInput);
        assert!(err.message().contains("eps, x0"), "{err}");
    }
}
