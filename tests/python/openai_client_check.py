#!/usr/bin/env python3
"""Checks Tandem's /v1/embeddings endpoint with the official `openai` Python client.

Usage: openai_client_check.py BASE_URL MODEL_ID [TEXTS_JSON]

BASE_URL is the server's root URL (for example http://127.0.0.1:8080); the client is pointed at
BASE_URL + "/v1". TEXTS_JSON is a file holding a JSON list of at least one string; without it (or
with "-") the list is read from standard input.

It makes five calls with `client.embeddings.create`, each for MODEL_ID:

- list_default: the list input, no encoding_format. Recent clients then ask the server for
  base64 themselves and decode it to floats (older ones ask for floats); either way the result
  must be floats.
- list_float: the list input, encoding_format="float"; the server must answer number arrays.
- list_base64: the list input, encoding_format="base64"; the client leaves the strings as they
  are, and this script decodes each as little-endian float32.
- single: texts[0] as a plain string (not a list), default format.
- dimensions_128: the list input, encoding_format="float", dimensions=128.

Each answer is checked for shape only: one embedding per input with indexes 0..n-1, every vector
of one length, 128 long for dimensions_128, finite numbers. Comparing the values with a reference
is left to the caller. Prints one JSON object:

    {"base_url": ..., "model": ..., "n_texts": n, "client_version": ...,
     "calls": {"list_default": {"embeddings": [[...], ...], "model": ..., "usage": {...},
                                "encoding_format": ...}, ...}}

Exits 1 with a message on standard error naming the call when the client raises (HTTP error
status, connection failure, timeout) or an answer has the wrong shape, and 2 when the arguments
or texts are unusable or the openai package is missing (pip install -r benches/requirements.txt).
"""

import base64
import json
import math
import struct
import sys


class CheckFailed(Exception):
    """A call failed or answered with the wrong shape."""


def read_texts(arg):
    try:
        if arg is None or arg == "-":
            texts = json.load(sys.stdin)
        else:
            with open(arg, encoding="utf-8") as f:
                texts = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the texts from {arg or 'standard input'}: {e}") from None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("the texts must be a non-empty JSON list of strings")
    return texts


def decode_base64(call, index, value):
    try:
        raw = base64.b64decode(value, validate=True)
    except (ValueError, TypeError) as e:
        raise CheckFailed(f"{call}: embedding {index} is not valid base64: {e}") from None
    if len(raw) % 4:
        raise CheckFailed(f"{call}: embedding {index} decodes to {len(raw)} bytes, not a whole number of float32")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def vectors(call, response, n_inputs, encoding, dimensions=None):
    """The embeddings of one answer in input order, checked for shape."""
    data = getattr(response, "data", None)
    if not isinstance(data, list):
        raise CheckFailed(f"{call}: the answer has no `data` list")
    if len(data) != n_inputs:
        raise CheckFailed(f"{call}: {len(data)} embeddings for {n_inputs} inputs")
    indexes = sorted(getattr(d, "index", None) for d in data if isinstance(getattr(d, "index", None), int))
    if indexes != list(range(n_inputs)):
        raise CheckFailed(f"{call}: the indexes are {[getattr(d, 'index', None) for d in data]}, "
                          f"not 0..{n_inputs - 1}")
    out = [None] * n_inputs
    for d in data:
        emb = d.embedding
        if encoding == "base64":
            if not isinstance(emb, str):
                raise CheckFailed(f"{call}: encoding_format=base64 but embedding {d.index} is a "
                                  f"{type(emb).__name__}, not a base64 string")
            emb = decode_base64(call, d.index, emb)
        else:
            if isinstance(emb, str):
                raise CheckFailed(f"{call}: encoding_format={encoding} but embedding {d.index} is a string")
            if not isinstance(emb, list) or not all(isinstance(v, (int, float)) for v in emb):
                raise CheckFailed(f"{call}: embedding {d.index} is not a list of numbers")
        if not all(math.isfinite(v) for v in emb):
            raise CheckFailed(f"{call}: embedding {d.index} has a non-finite value")
        out[d.index] = [float(v) for v in emb]
    lengths = sorted({len(v) for v in out})
    if len(lengths) != 1 or lengths[0] == 0:
        raise CheckFailed(f"{call}: embedding lengths {lengths}, expected one non-zero length")
    if dimensions is not None and lengths[0] != dimensions:
        raise CheckFailed(f"{call}: asked for dimensions={dimensions}, got {lengths[0]}")
    return out


def describe(e, openai):
    if isinstance(e, openai.APIStatusError):
        body = e.body if e.body is not None else getattr(e.response, "text", "")
        return f"HTTP {e.status_code} ({type(e).__name__}): {json.dumps(body) if not isinstance(body, str) else body}"
    if isinstance(e, openai.APITimeoutError):
        return f"timed out: {e}"
    if isinstance(e, openai.APIConnectionError):
        cause = f" ({e.__cause__})" if e.__cause__ else ""
        return f"connection failed: {e}{cause}"
    return f"{type(e).__name__}: {e}"


def main(argv):
    if len(argv) not in (3, 4) or argv[1] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    base_url, model = argv[1].rstrip("/"), argv[2]
    try:
        texts = read_texts(argv[3] if len(argv) == 4 else None)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        import openai
    except ImportError:
        print("python package openai is not installed: pip install -r benches/requirements.txt", file=sys.stderr)
        return 2

    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120.0)
    calls = [
        # name, input, keyword arguments, how the embeddings come back, dimensions expected
        ("list_default", texts, {}, "float", None),
        ("list_float", texts, {"encoding_format": "float"}, "float", None),
        ("list_base64", texts, {"encoding_format": "base64"}, "base64", None),
        ("single", texts[0], {}, "float", None),
        ("dimensions_128", texts, {"encoding_format": "float", "dimensions": 128}, "float", 128),
    ]
    results = {}
    for name, inp, kwargs, encoding, dims in calls:
        try:
            response = client.embeddings.create(model=model, input=inp, **kwargs)
        except openai.OpenAIError as e:
            print(f"{name}: embeddings.create failed against {base_url}/v1: {describe(e, openai)}", file=sys.stderr)
            return 1
        try:
            embs = vectors(name, response, 1 if isinstance(inp, str) else len(inp), encoding, dims)
        except CheckFailed as e:
            print(f"{e} (against {base_url}/v1)", file=sys.stderr)
            return 1
        usage = getattr(response, "usage", None)
        results[name] = {
            "embeddings": embs,
            "model": getattr(response, "model", None),
            "usage": usage.model_dump() if hasattr(usage, "model_dump") else None,
            "encoding_format": kwargs.get("encoding_format", "default"),
        }
    json.dump({"base_url": base_url, "model": model, "n_texts": len(texts),
               "client_version": openai.__version__, "calls": results}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
