#!/usr/bin/env python3
"""Checks Tandem's Open Inference Protocol routes (/v2) with Triton's own `tritonclient[http]`.

Usage: tritonclient_check.py HOST:PORT CLASSIFIER EMBEDDER EMBEDDER_VERSION

A JSON object {"images": [...], "texts": [...]} is read from standard input: `images` a nested
list of shape [N, C, H, W] of pixel values on the 0-255 scale (whole numbers, so that UINT8 can
carry them too), `texts` a non-empty list of strings.

With one InferenceServerClient it checks, through the client's own calls:

- is_server_live, is_server_ready, get_server_metadata (which must list binary_tensor_data),
  is_model_ready and get_model_metadata for both models;
- the classifier on the images: FP32 in JSON (binary_data=False for the input and the output),
  FP32 in binary, UINT8 in binary, and the client's defaults (binary input, no outputs named,
  so the client asks for binary_data_output);
- the embedder on the texts: BYTES in JSON and in binary, the second through the versioned path;
- errors: an INT32 input must raise InferenceServerException with status "422" and a string
  message, which needs the protocol's {"error": string} shape; an unknown model must be "404".

Each answer is checked for shape and finiteness only; comparing the values with Tandem's own
routes is left to the caller. Prints one JSON object:

    {"client_version": ..., "server_metadata": {...}, "model_metadata": {NAME: {...}},
     "classifier": {"json": [[...]], "binary": ..., "uint8": ..., "default": ...},
     "embedder": {"json": [[...]], "binary": ...},
     "errors": {"datatype": {"status": "422", "message": ...}, "unknown_model": {...}}}

Exits 1 with a message on standard error naming the step when a call fails or an answer has the
wrong shape, and 2 when the arguments or the input are unusable or tritonclient is missing
(python3 -m pip install -r benches/requirements.txt).
"""

import json
import math
import sys


class CheckFailed(Exception):
    """A call failed or answered with the wrong shape."""


def read_input():
    try:
        given = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        raise ValueError(f"standard input is not JSON: {e}") from None
    images, texts = given.get("images"), given.get("texts")
    if not isinstance(images, list) or not images:
        raise ValueError("`images` must be a non-empty [N, C, H, W] list")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("`texts` must be a non-empty list of strings")
    return images, texts


def matrix(step, array, rows):
    """A 2-D answer as lists, checked: `rows` rows of one width, all finite."""
    if array is None:
        raise CheckFailed(f"{step}: the answer has no such output")
    if array.ndim != 2 or array.shape[0] != rows or array.shape[1] == 0:
        raise CheckFailed(f"{step}: output shape {list(array.shape)}, expected [{rows}, width]")
    values = array.tolist()
    if not all(math.isfinite(v) for row in values for v in row):
        raise CheckFailed(f"{step}: a value is not finite")
    return values


def expect_error(step, call, status):
    """Runs `call`, which must raise InferenceServerException with `status` and a string message."""
    from tritonclient.utils import InferenceServerException

    try:
        call()
    except InferenceServerException as e:
        if e.status() != status:
            raise CheckFailed(f"{step}: status {e.status()!r}, expected {status!r}: {e}") from None
        if not isinstance(e.message(), str) or not e.message():
            raise CheckFailed(f"{step}: the message is {e.message()!r}, not a string") from None
        # str() prefixes the status and fails unless the message is a string.
        return {"status": e.status(), "message": e.message(), "text": str(e)}
    raise CheckFailed(f"{step}: the call succeeded, expected status {status}")


def run(url, classifier, embedder, embedder_version, images, texts):
    import numpy as np
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=url, network_timeout=120.0)
    out = {}
    if not client.is_server_live():
        raise CheckFailed("is_server_live: false")
    if not client.is_server_ready():
        raise CheckFailed("is_server_ready: false")
    out["server_metadata"] = client.get_server_metadata()
    if "binary_tensor_data" not in out["server_metadata"].get("extensions", []):
        raise CheckFailed(f"get_server_metadata: no binary_tensor_data in {out['server_metadata']}")
    out["model_metadata"] = {}
    for name in (classifier, embedder):
        if not client.is_model_ready(name):
            raise CheckFailed(f"is_model_ready({name}): false")
        out["model_metadata"][name] = client.get_model_metadata(name)
    if not client.is_model_ready(embedder, model_version=embedder_version):
        raise CheckFailed(f"is_model_ready({embedder}, {embedder_version}): false")

    pixels = np.asarray(images, dtype=np.float32)
    n = pixels.shape[0]

    def classify(step, array, datatype, binary, name_outputs=True):
        tensor = httpclient.InferInput("images", list(array.shape), datatype)
        if binary is None:
            tensor.set_data_from_numpy(array)
        else:
            tensor.set_data_from_numpy(array, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=bool(binary))] if name_outputs else None
        result = client.infer(classifier, [tensor], outputs=outputs, request_id=step)
        response = result.get_response()
        if response.get("model_name") != classifier or response.get("id") != step:
            raise CheckFailed(f"{step}: model_name/id are {response.get('model_name')!r}/{response.get('id')!r}")
        return matrix(step, result.as_numpy("probabilities"), n)

    out["classifier"] = {
        "json": classify("json", pixels, "FP32", False),
        "binary": classify("binary", pixels, "FP32", True),
        "uint8": classify("uint8", pixels.astype(np.uint8), "UINT8", True),
        "default": classify("default", pixels, "FP32", None, name_outputs=False),
    }

    strings = np.array([t.encode("utf-8") for t in texts], dtype=np.object_)

    def embed(step, binary, version=""):
        tensor = httpclient.InferInput("text", [len(texts)], "BYTES")
        tensor.set_data_from_numpy(strings, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("embeddings", binary_data=binary)]
        result = client.infer(embedder, [tensor], model_version=version, outputs=outputs)
        return matrix(step, result.as_numpy("embeddings"), len(texts))

    out["embedder"] = {"json": embed("json", False), "binary": embed("binary", True, embedder_version)}

    def wrong_datatype():
        tensor = httpclient.InferInput("images", list(pixels.shape), "INT32")
        tensor.set_data_from_numpy(pixels.astype(np.int32))
        client.infer(classifier, [tensor])

    def unknown_model():
        tensor = httpclient.InferInput("images", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels)
        client.infer("no-such-model", [tensor])

    out["errors"] = {
        "datatype": expect_error("datatype", wrong_datatype, "422"),
        "unknown_model": expect_error("unknown_model", unknown_model, "404"),
    }
    client.close()
    return out


def main(argv):
    if len(argv) != 5 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    url, classifier, embedder, embedder_version = argv[1:]
    try:
        images, texts = read_input()
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        from importlib.metadata import version

        import tritonclient.http  # noqa: F401
    except ImportError as e:
        print(f"tritonclient[http] is not installed ({e}): pip install -r benches/requirements.txt", file=sys.stderr)
        return 2
    from tritonclient.utils import InferenceServerException

    try:
        result = run(url, classifier, embedder, embedder_version, images, texts)
    except CheckFailed as e:
        print(f"{e} (against {url})", file=sys.stderr)
        return 1
    except InferenceServerException as e:
        print(f"a call failed against {url}: {e}", file=sys.stderr)
        return 1
    result["client_version"] = version("tritonclient")
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
