#!/usr/bin/env python3
"""Independent numpy reference for sentence-transformers BERT embedding models.

Usage: minilm_reference.py MODEL_DIR < texts.json

MODEL_DIR is a sentence-transformers directory (config.json, model.safetensors, tokenizer.json,
modules.json, 1_Pooling/config.json, optionally sentence_bert_config.json), for example
all-MiniLM-L6-v2. Standard input is a JSON list of strings. Standard output is one JSON object:

    {"embeddings": [[...], ...], "n_tokens": [...], "truncated": [bool, ...]}

with one entry per text: its embedding, its token count including [CLS] and [SEP] after
truncation, and whether truncation to max_seq_length dropped tokens.

The forward pass is written out here in float64 numpy, without torch, candle or onnx, so it can
judge the server's output rather than share its bugs: embeddings (word + position + token type
0) -> LayerNorm -> per layer: self-attention with an additive padding mask, output dense +
residual + LayerNorm, intermediate dense + GELU, output dense + residual + LayerNorm; then the
pooling that 1_Pooling/config.json names (cls, max, mean, mean_sqrt_len, concatenated in
sentence-transformers' order when several are on) over real tokens only, then L2 normalisation
when modules.json has a Normalize module. The number of layers, heads, sizes and the LayerNorm
epsilon come from config.json. Tokenization uses the `tokenizers` package on tokenizer.json with
its padding switched off and truncation set to max_seq_length (keeping [SEP]), as
sentence-transformers does. Each text runs on its own (batch 1), so padding plays no part.

Requires numpy, safetensors and tokenizers (pip install -r benches/requirements.txt).
Exits 2 with a message on standard error when the directory or the input is not usable.
"""

import json
import math
import os
import sys


class ModelDirError(Exception):
    """A problem with the model directory or the input, reported without a traceback."""


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ModelDirError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ModelDirError(f"{what} is not valid JSON ({path}): {e}") from None


def _erf(np):
    """Exact erf on float64 arrays, via math.erf element by element."""
    ufunc = np.frompyfunc(math.erf, 1, 1)
    return lambda x: ufunc(x).astype(np.float64)


class BertSentenceModel:
    """A sentence-transformers BERT directory, loaded for a float64 numpy forward pass."""

    def __init__(self, model_dir):
        import numpy as np
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.np = np
        self.erf = _erf(np)
        if not os.path.isdir(model_dir):
            raise ModelDirError(f"model directory not found: {model_dir}")
        cfg = _read_json(os.path.join(model_dir, "config.json"), "config.json")
        if cfg.get("model_type", "bert") != "bert":
            raise ModelDirError(f"config.json model_type is {cfg.get('model_type')!r}, not 'bert'")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ModelDirError("only absolute position embeddings are supported")
        self.hidden = int(cfg["hidden_size"])
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.act = cfg.get("hidden_act", "gelu")
        if self.act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu"):
            raise ModelDirError(f"unsupported hidden_act {self.act!r}")
        if self.hidden % self.heads:
            raise ModelDirError("hidden_size is not a multiple of num_attention_heads")
        max_pos = int(cfg.get("max_position_embeddings", 512))

        # modules.json: Transformer, Pooling, optional Normalize; anything else is not modelled.
        modules_path = os.path.join(model_dir, "modules.json")
        pooling_dir = "1_Pooling"
        self.normalize = False
        if os.path.exists(modules_path):
            for m in _read_json(modules_path, "modules.json"):
                kind = m.get("type", "").rsplit(".", 1)[-1]
                if kind == "Pooling":
                    pooling_dir = m.get("path") or pooling_dir
                elif kind == "Normalize":
                    self.normalize = True
                elif kind != "Transformer":
                    raise ModelDirError(f"modules.json module {m.get('type')!r} is not supported")
        pool_cfg = _read_json(os.path.join(model_dir, pooling_dir, "config.json"), "pooling config")
        self.pooling = self._pooling_modes(pool_cfg)

        st_path = os.path.join(model_dir, "sentence_bert_config.json")
        st_cfg = _read_json(st_path, "sentence_bert_config.json") if os.path.exists(st_path) else {}
        self.max_seq_length = min(int(st_cfg.get("max_seq_length") or max_pos), max_pos)
        self.lower = bool(st_cfg.get("do_lower_case", False))

        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)

        weights_path = os.path.join(model_dir, "model.safetensors")
        if not os.path.exists(weights_path):
            raise ModelDirError(f"model.safetensors not found in {model_dir}")
        raw = load_file(weights_path)
        suffix = "embeddings.word_embeddings.weight"
        prefixes = [k[: -len(suffix)] for k in raw if k.endswith(suffix)]
        if len(prefixes) != 1:
            raise ModelDirError(f"expected one '{suffix}' tensor, found {len(prefixes)}")
        prefix = prefixes[0]  # "" or "bert."
        self.w = {}
        for k, v in raw.items():
            if k.startswith(prefix):
                self.w[k[len(prefix):]] = v.astype(np.float64)
        for i in range(self.layers):
            if f"encoder.layer.{i}.attention.self.query.weight" not in self.w:
                raise ModelDirError(f"weights lack encoder layer {i} (config says {self.layers})")

    @staticmethod
    def _pooling_modes(cfg):
        if isinstance(cfg.get("pooling_mode"), str):
            modes = [cfg["pooling_mode"]]
        else:
            # sentence-transformers concatenates in this order.
            order = [("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                     ("pooling_mode_mean_tokens", "mean"),
                     ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len")]
            modes = [name for key, name in order if cfg.get(key)]
            for key in ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"):
                if cfg.get(key):
                    raise ModelDirError(f"pooling mode {key} is not supported")
        if not modes:
            raise ModelDirError("pooling config enables no pooling mode")
        for m in modes:
            if m not in ("cls", "max", "mean", "mean_sqrt_len"):
                raise ModelDirError(f"pooling mode {m!r} is not supported")
        return modes

    def tokenize(self, text):
        """Token ids (with [CLS]/[SEP]) and whether truncation dropped tokens."""
        text = str(text).strip()
        if self.lower:
            text = text.lower()
        enc = self.tokenizer.encode(text)
        return list(enc.ids), len(enc.overflowing) > 0

    def _layer_norm(self, x, name):
        np = self.np
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def _dense(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def _act(self, x):
        np = self.np
        if self.act == "gelu":
            return 0.5 * x * (1.0 + self.erf(x / math.sqrt(2.0)))
        if self.act == "relu":
            return np.maximum(x, 0.0)
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))

    def encode(self, ids, mask):
        """Token embeddings [B, S, H] of int ids [B, S] under a 0/1 attention mask [B, S]."""
        np = self.np
        ids = np.asarray(ids, dtype=np.int64)
        mask = np.asarray(mask, dtype=np.float64)
        b, s = ids.shape
        x = (self.w["embeddings.word_embeddings.weight"][ids]
             + self.w["embeddings.position_embeddings.weight"][np.arange(s)][None]
             + self.w["embeddings.token_type_embeddings.weight"][0][None, None])
        x = self._layer_norm(x, "embeddings.LayerNorm")
        nh, hd = self.heads, self.hidden // self.heads
        additive = (1.0 - mask)[:, None, None, :] * -1e9  # padding keys get ~zero weight
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(t):
                return t.reshape(b, s, nh, hd).transpose(0, 2, 1, 3)

            q = split(self._dense(x, p + "attention.self.query"))
            k = split(self._dense(x, p + "attention.self.key"))
            v = split(self._dense(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + additive
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, self.hidden)
            x = self._layer_norm(self._dense(ctx, p + "attention.output.dense") + x,
                                 p + "attention.output.LayerNorm")
            h = self._act(self._dense(x, p + "intermediate.dense"))
            x = self._layer_norm(self._dense(h, p + "output.dense") + x, p + "output.LayerNorm")
        return x

    def pool(self, tokens, mask):
        """Sentence embeddings [B, D] from token embeddings, over real (mask 1) tokens only."""
        np = self.np
        m = np.asarray(mask, dtype=np.float64)[:, :, None]
        count = np.maximum(m.sum(axis=1), 1e-9)
        parts = []
        for mode in self.pooling:
            if mode == "cls":
                parts.append(tokens[:, 0])
            elif mode == "max":
                parts.append(np.where(m > 0, tokens, -1e9).max(axis=1))
            elif mode == "mean":
                parts.append((tokens * m).sum(axis=1) / count)
            else:
                parts.append((tokens * m).sum(axis=1) / np.sqrt(count))
        out = np.concatenate(parts, axis=-1)
        if self.normalize:
            out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return out

    def embed(self, text):
        """(embedding as float64 array, token count, truncated) for one text, at batch 1."""
        np = self.np
        ids, truncated = self.tokenize(text)
        mask = np.ones((1, len(ids)))
        emb = self.pool(self.encode(np.array([ids]), mask), mask)[0]
        return emb, len(ids), truncated


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as e:
        print(f"python package {e.name} is not installed: pip install -r benches/requirements.txt",
              file=sys.stderr)
        return 2
    try:
        texts = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        print(f"standard input is not JSON: {e}", file=sys.stderr)
        return 2
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        print("standard input must be a JSON list of strings", file=sys.stderr)
        return 2
    try:
        model = BertSentenceModel(argv[1])
    except (ModelDirError, KeyError) as e:
        print(f"cannot load {argv[1]}: {e}", file=sys.stderr)
        return 2
    out = {"embeddings": [], "n_tokens": [], "truncated": []}
    for text in texts:
        emb, n, truncated = model.embed(text)
        out["embeddings"].append([float(v) for v in emb])
        out["n_tokens"].append(n)
        out["truncated"].append(truncated)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
