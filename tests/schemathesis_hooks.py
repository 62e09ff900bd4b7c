"""Schemathesis hooks for the OpenAPI fuzz test: keep generated classify inputs decodable, and
forgive the answers that depend on a model's own tensors.

The spec cannot say "valid PNG bytes" or "every pixel row has the same length", so schemathesis
generates schema-valid requests that the server must refuse as documented: 400 `invalid_image`
for image strings and raw bodies that are not PNG or JPEG, and 422 `invalid_input` for ragged pixel
arrays. Left alone, the positive-data check reports those documented answers as failures and hides
real ones behind them.

Rather than switching a check off, these hooks narrow the gap precisely:

- `map_case` repairs JSON classify and embed bodies that were generated to match the schema,
  without changing that: an `image` string becomes a real base64 PNG, and short pixel rows are
  padded with zeros (embed inputs may be image objects, for `image_text` models). Bodies generated to violate the schema, and everything else (types, missing or extra
  fields, values, `top_k`, the query string), are left as generated, so every check still judges
  them.
- `filter_failure` forgives exactly three "schema-valid request rejected" failures. A raw `image/*`
  body answered with 400 `invalid_image`: those bodies are schema-less random bytes that are never
  a real image, and replacing them in `map_case` is not an option: schemathesis then re-validates
  the body, cannot validate bytes, and wrongly treats the request as schema-violating. A 422 for a
  model of another family (an embedder's id on classify, say), a 422 for `dimensions` past the
  model's width, and the 422s for what only `image_text` models take (an image among an embedder's
  embed inputs, `labels` on a classifier's classify): all depend on which model an id names, which
  no schema can state.
- `filter_failure` also forgives two kinds of rejection on the Open Inference Protocol's infer
  routes (`/v2/models/{name}[/versions/{version}]/infer`). Errors about a model's tensors: which
  input and output names, datatypes and shapes a model takes is stated per model by
  `GET /v2/models/{name}`, not by the spec, whose path parameter may name any model, and the
  element count must equal the product of the shape, a cross-field rule JSON Schema cannot state;
  the server words every such error `input "<name>": ...`, `output "<name>": ...` or
  `inputs must hold ...`, and only those are forgiven, so an error about the body itself
  (`invalid request body: ...`) is still reported. And 400 or 422 answers to
  `application/octet-stream` bodies: the binary tensor data extension's body is N bytes of JSON
  followed by raw tensors, with N in a request header, which no schema can describe, so
  schemathesis sends random bytes that are never a valid request, as for raw images.

- `filter_failure` forgives 422 `invalid_input` answers of the generate route
  (`/v1/models/{id}/generate`) unless they are about the body itself (`invalid request body: ...`).
  The others are rules no static schema can state: the server's `max_generate_steps` and
  `max_generate_images` (settings), a class past the model's labels, a sampler, `guidance`,
  `dualfast` or `sigmas` that the model's kind does not take, a σ list the model does not have, and
  `sigmas` whose length differs from `steps` (a cross-field rule).

The admin routes (`POST /v1/models`, `DELETE /v1/models/{id}`, `POST /v1/models/{id}/reload`) need no
hook. The fuzzed server gives the models the other operations use with `--model`, which the admin API
refuses to unload or reload (409, documented), and its models directory holds only a scratch bundle,
so whatever the stateful phase unloads, nothing else loses its model. Load requests state the name
rule as a pattern, so generated names are looked up (404 when absent) rather than refused.
"""

import base64
import struct
import zlib

import schemathesis


def _png(width=8, height=8):
    """An 8-bit grayscale PNG, built with the standard library only."""

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes((x * 31 + y * 7) % 256 for x in range(width)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG_BASE64 = base64.b64encode(_png()).decode("ascii")


def _is_classify(operation):
    return operation is not None and getattr(operation, "path", "").endswith("/classify")


def _is_embed(operation):
    return operation is not None and getattr(operation, "path", "").endswith("/embed")


def _takes_images(operation):
    return _is_classify(operation) or _is_embed(operation)


def _is_raw_image(case):
    return (getattr(case, "media_type", None) or "").lower().startswith("image/")


def _body_is_negative(case):
    """Whether the body was generated to violate the schema."""
    meta = getattr(case, "meta", None)
    for location, info in (getattr(meta, "components", None) or {}).items():
        if getattr(location, "value", location) == "body":
            return bool(getattr(getattr(info, "mode", None), "is_negative", False))
    return False


def _repair_json(body):
    """Decodable images and rectangular pixel arrays; a no-op on anything else."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        return body
    for item in body["inputs"]:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("image"), str):
            item["image"] = PNG_BASE64
        rows = item.get("pixels")
        if isinstance(rows, list) and rows and all(isinstance(row, list) for row in rows):
            width = max(len(row) for row in rows)
            for row in rows:
                row.extend([0] * (width - len(row)))
    return body


def map_case(context, case):
    if _takes_images(case.operation) and not _is_raw_image(case) and not _body_is_negative(case):
        case.body = _repair_json(case.body)
    return case


def map_body(context, body):
    if _takes_images(getattr(context, "operation", None)):
        return _repair_json(body)
    return body


def _error(response):
    """`(type, message)` of an error body in either shape, or `(None, "")`.

    Tandem's own routes answer `{"error": {"type", "message"}}`, `/v2` routes the Open Inference
    Protocol's `{"error": "<message>", "type": ...}`.
    """
    try:
        body = response.json()
        error = body["error"]
        if isinstance(error, str):
            return body["type"], error
        return error["type"], error["message"]
    except Exception:
        return None, ""


def _is_infer(operation):
    path = getattr(operation, "path", "") if operation is not None else ""
    return path.startswith("/v2/models/") and path.endswith("/infer")


def _is_binary(case):
    return (getattr(case, "media_type", None) or "").lower() == "application/octet-stream"


# How the server words errors about a model's own tensors on the infer routes.
_TENSOR_CONTRACT = ('input "', 'output "', "inputs must hold ")


# The 422 a family's route gives a model of another family: the spec cannot say which ids name
# which kind, and the fuzzed server holds one model of each.
_WRONG_KIND = "is of kind `"
# The 422 for `dimensions` past the model's width: a per-model bound the spec cannot state.
_DIMENSIONS = "dimensions must be between 1 and "
# The 422s for inputs only `image_text` models take: an image among an embedder's embed inputs,
# and `labels` on a classify route whose model has fixed classes.
_IMAGE_TEXT_ONLY = ("embeds texts only (images need an image_text model)", "labels are for image_text models only")


def _is_generate(operation):
    return operation is not None and getattr(operation, "path", "").endswith("/generate")


def filter_failure(context, failure, case, response):
    if getattr(failure, "code", None) != "ST202":
        return True
    kind, message = _error(response)
    if _is_generate(case.operation) and response.status_code == 422 and kind == "invalid_input":
        return message.startswith("invalid request body: ")
    if _is_infer(case.operation):
        if _is_binary(case):
            return not (response.status_code in (400, 422) and kind in ("bad_request", "invalid_json", "invalid_input"))
        if response.status_code in (400, 413, 422) and message.startswith(_TENSOR_CONTRACT):
            return False
    if response.status_code == 422 and kind == "invalid_input":
        model_bound = _WRONG_KIND in message or message.startswith(_DIMENSIONS)
        return not (model_bound or any(rule in message for rule in _IMAGE_TEXT_ONLY))
    if _is_classify(case.operation) and _is_raw_image(case):
        return not (response.status_code == 400 and kind == "invalid_image")
    return True


try:
    schemathesis.hook(map_case)
except TypeError:
    # Releases without case hooks.
    schemathesis.hook(map_body)

try:
    schemathesis.hook(filter_failure)
except TypeError:
    # Releases without failure filters report raw-body 400s; the test output says which ones.
    pass
