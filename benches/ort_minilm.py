#!/usr/bin/env python3
"""Times ONNX Runtime on a sentence-transformers BERT model (all-MiniLM-L6-v2) for the embedding benchmark.

Usage: ort_minilm.py MODEL_DIR [--threads 2] [--batches 1,8,32] [--seconds 1.0]
                     [--optimizer auto|transformers|none] [--texts-json FILE] [--corpus-json FILE]

MODEL_DIR is a sentence-transformers directory (config.json, model.safetensors, tokenizer.json,
modules.json, 1_Pooling/config.json, sentence_bert_config.json). The ONNX graph is built here with
onnx.helper from the safetensors weights, so both runtimes see identical weights: Gather
embeddings (word + position + token type 0), LayerNormalization (opset 17), per layer
MatMul/Add projections, attention as MatMul + Softmax with an additive mask made from
`attention_mask`, Erf GELU, residual + LayerNormalization; then mean pooling under the mask and
L2 normalisation (when modules.json has a Normalize module). Inputs `input_ids` and
`attention_mask` are int64 [batch, seq]; the output `embeddings` is float32 [batch, hidden].

--optimizer auto (the default) runs onnxruntime.transformers.optimizer (model_type bert) on the
graph when it is importable and falls back to the plain graph otherwise; `transformers` insists on
it, `none` skips it. Either way the session uses ORT_ENABLE_ALL graph optimisations.

Timing: texts come from a fixed English corpus in this script and are tokenized with the
`tokenizers` package: "short" texts are single sentences (about 12 tokens with [CLS]/[SEP]),
"long" texts are consecutive corpus sentences joined and truncated to 128 tokens. A batch is
padded to its longest text. With --corpus-json FILE ({"short": [...], "long": [...]}, at least
max(batches) texts each) those texts are timed instead, so a caller (`tandem bench embed`) times
both runtimes on exactly the same texts. Only the ONNX Runtime run is timed (tokenization is not); each
(length, batch) gets 3 warm-up runs and the best of 3 windows of --seconds/3.

Prints one JSON object: sentences/s per length and batch, the mean token count per length, which
optimizer was used (with the fused operator counts), the onnxruntime version, and the embeddings
of the fixed check sentences so the caller can compare outputs. With --texts-json FILE (a JSON list
of strings) it skips timing and prints {"embeddings", "n_tokens", "optimizer", "onnxruntime"} for
those texts, embedded together as one padded batch. When a package is missing it prints
{"error": ...} naming the pip command and exits 0.
"""

import argparse
import json
import math
import os
import sys
import time

PIP = "pip install -r benches/requirements.txt"

# A fixed corpus of plain English sentences, 11 to 14 tokens each with [CLS] and [SEP] (12 on average).
CORPUS = [
    "The train to the coast leaves every hour.",
    "She planted tomatoes and basil in the sunny garden.",
    "Our team finished the quarterly report two days early.",
    "A light rain fell over the city all afternoon.",
    "The museum opens a new exhibition next week.",
    "He repaired the old bicycle with parts from a shop.",
    "Children played football in the park until sunset.",
    "The recipe calls for two cups of flour.",
    "Scientists measured the temperature of the lake every morning.",
    "The library extended its opening hours during exams.",
    "A small fishing boat returned before the storm.",
    "The committee will announce its decision next month.",
    "My neighbour walks her two dogs along the river.",
    "The concert was postponed because the singer was ill.",
    "Fresh bread from the corner bakery sells out early.",
    "The hikers reached the summit as the clouds cleared.",
    "Please send the signed contract back by Friday.",
    "The new bridge shortened the commute for many drivers.",
    "He learned to play the piano by practising daily.",
    "The company opened a second warehouse near the airport.",
    "Autumn leaves covered the path up to the old church.",
    "The doctor advised him to drink more water.",
    "Students gathered in the hall to hear the professor.",
    "The market sells fruit, vegetables and cheese.",
    "A sudden power cut left the whole street dark.",
    "The painter mixed blue and yellow to make green.",
    "Our flight was delayed, so we ate at the airport.",
    "The council plans to plant a thousand new trees.",
    "She wrote a letter to her grandmother every Sunday.",
    "The engineers tested the software on several computers.",
    "Heavy snow closed the mountain pass for the winter.",
    "The children built a sandcastle with a deep moat.",
]

# Check sentences whose embeddings are printed for comparison with other runtimes.
CHECK = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Stock markets fell sharply on Monday.",
]

LONG_TOKENS = 128


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_config(model_dir):
    """The few settings the graph needs, from the sentence-transformers directory."""
    cfg = read_json(os.path.join(model_dir, "config.json"))
    pooling_dir, normalize = "1_Pooling", False
    modules_path = os.path.join(model_dir, "modules.json")
    if os.path.exists(modules_path):
        for m in read_json(modules_path):
            kind = m.get("type", "").rsplit(".", 1)[-1]
            if kind == "Pooling":
                pooling_dir = m.get("path") or pooling_dir
            elif kind == "Normalize":
                normalize = True
            elif kind != "Transformer":
                raise ValueError(f"modules.json module {m.get('type')!r} is not supported")
    pool = read_json(os.path.join(model_dir, pooling_dir, "config.json"))
    if pool.get("pooling_mode", "mean") != "mean" or not pool.get("pooling_mode_mean_tokens", True) or any(
            pool.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                  "pooling_mode_mean_sqrt_len_tokens")):
        raise ValueError("only mean pooling is built into the graph")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act {cfg.get('hidden_act')!r} is not the erf GELU")
    st_path = os.path.join(model_dir, "sentence_bert_config.json")
    st = read_json(st_path) if os.path.exists(st_path) else {}
    max_pos = int(cfg.get("max_position_embeddings", 512))
    return {
        "hidden": int(cfg["hidden_size"]),
        "heads": int(cfg["num_attention_heads"]),
        "layers": int(cfg["num_hidden_layers"]),
        "eps": float(cfg.get("layer_norm_eps", 1e-12)),
        "normalize": normalize,
        "max_seq_length": min(int(st.get("max_seq_length") or max_pos), max_pos),
        "lower": bool(st.get("do_lower_case", False)),
    }


def load_weights(model_dir, load_file, np):
    """Tensors by name without a leading `bert.` (or other) prefix, as float32."""
    raw = load_file(os.path.join(model_dir, "model.safetensors"))
    suffix = "embeddings.word_embeddings.weight"
    prefixes = [k[: -len(suffix)] for k in raw if k.endswith(suffix)]
    if len(prefixes) != 1:
        raise ValueError(f"expected one '{suffix}' tensor, found {len(prefixes)}")
    p = prefixes[0]
    return {k[len(p):]: v.astype(np.float32) for k, v in raw.items() if k.startswith(p)}


def build_model(w, c, np, helper, numpy_helper, TensorProto):
    """The BERT sentence-embedding graph, laid out like a Hugging Face export so fusions match."""
    inits, nodes = [], []
    h, nh = c["hidden"], c["heads"]
    hd = h // nh

    def init(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    f32 = lambda v: np.array(v, dtype=np.float32)  # noqa: E731
    one, half = init("one", f32(1.0)), init("half", f32(0.5))
    sqrt2, scale = init("sqrt2", f32(math.sqrt(2.0))), init("scale", f32(math.sqrt(hd)))
    neg = init("mask_neg", f32(-10000.0))
    ax1, ax2 = init("axis1", np.array([1], np.int64)), init("axis2", np.array([2], np.int64))
    heads_shape = init("heads_shape", np.array([0, 0, nh, hd], np.int64))
    merge_shape = init("merge_shape", np.array([0, 0, h], np.int64))

    def linear(x, name, out):
        wt = init(name + ".weight_t", w[name + ".weight"].T.copy())
        b = init(name + ".bias", w[name + ".bias"])
        return node("Add", [node("MatMul", [x, wt], out + "_mm"), b], out)

    def layer_norm(x, name, out):
        g = init(name + ".weight", w[name + ".weight"])
        b = init(name + ".bias", w[name + ".bias"])
        return node("LayerNormalization", [x, g, b], out, axis=-1, epsilon=c["eps"])

    # Embeddings: word + position + token type 0, then LayerNorm.
    word = node("Gather", [init("word_embeddings", w["embeddings.word_embeddings.weight"]), "input_ids"],
                "emb_word")
    seq = node("Gather", [node("Shape", ["input_ids"], "ids_shape"), init("idx1", np.array(1, np.int64))],
               "seq_len")
    pos = node("Range", [init("zero_i", np.array(0, np.int64)), seq, init("one_i", np.array(1, np.int64))],
               "position_ids")
    pos_emb = node("Gather", [init("position_embeddings", w["embeddings.position_embeddings.weight"]), pos],
                   "emb_pos")
    tok0 = init("token_type_0", w["embeddings.token_type_embeddings.weight"][0])
    x = node("Add", [node("Add", [word, pos_emb], "emb_wp"), tok0], "emb_sum")
    x = layer_norm(x, "embeddings.LayerNorm", "emb_ln")

    # Additive attention mask [B, 1, 1, S]: 0 for real tokens, -10000 for padding.
    m = node("Unsqueeze", [node("Unsqueeze", ["attention_mask", ax1], "mask_u1"), ax2], "mask_u2")
    m = node("Cast", [m], "mask_f", to=TensorProto.FLOAT)
    add_mask = node("Mul", [node("Sub", [one, m], "mask_inv"), neg], "mask_add")

    for i in range(c["layers"]):
        p, t = f"encoder.layer.{i}.", f"l{i}_"

        def heads(y, name, perm):
            return node("Transpose", [node("Reshape", [y, heads_shape], name + "_r")], name + "_t", perm=perm)

        q = heads(linear(x, p + "attention.self.query", t + "q"), t + "q", [0, 2, 1, 3])
        k = heads(linear(x, p + "attention.self.key", t + "k"), t + "k", [0, 2, 3, 1])
        v = heads(linear(x, p + "attention.self.value", t + "v"), t + "v", [0, 2, 1, 3])
        scores = node("Div", [node("MatMul", [q, k], t + "qk"), scale], t + "qk_scaled")
        probs = node("Softmax", [node("Add", [scores, add_mask], t + "qk_masked")], t + "probs", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], t + "ctx")], t + "ctx_t", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_shape], t + "ctx_merged")
        attn = linear(ctx, p + "attention.output.dense", t + "attn_out")
        x = layer_norm(node("Add", [attn, x], t + "attn_res"), p + "attention.output.LayerNorm", t + "ln1")
        inter = linear(x, p + "intermediate.dense", t + "inter")
        erf = node("Erf", [node("Div", [inter, sqrt2], t + "gelu_div")], t + "gelu_erf")
        gelu = node("Mul", [node("Mul", [inter, node("Add", [erf, one], t + "gelu_add")], t + "gelu_mul"), half],
                    t + "gelu")
        out = linear(gelu, p + "output.dense", t + "ffn_out")
        x = layer_norm(node("Add", [out, x], t + "ffn_res"), p + "output.LayerNorm", t + "ln2")

    # Mean pooling over real tokens, then L2 normalisation.
    pm = node("Cast", [node("Unsqueeze", ["attention_mask", ax2], "pool_u")], "pool_mask", to=TensorProto.FLOAT)
    total = node("ReduceSum", [node("Mul", [x, pm], "pool_masked"), ax1], "pool_sum", keepdims=0)
    count = node("Max", [node("ReduceSum", [pm, ax1], "pool_count", keepdims=0), init("min_count", f32(1e-9))],
                 "pool_count_clamped")
    pooled = node("Div", [total, count], "pooled" if c["normalize"] else "embeddings")
    if c["normalize"]:
        ss = node("ReduceSum", [node("Mul", [pooled, pooled], "sq"), ax1], "sq_sum", keepdims=1)
        norm = node("Max", [node("Sqrt", [ss], "norm"), init("min_norm", f32(1e-12))], "norm_clamped")
        node("Div", [pooled, norm], "embeddings")

    graph = helper.make_graph(
        nodes,
        "tandem_bench_minilm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", h])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def transformer_optimize(model, c, choice):
    """(model, description): the transformer optimizer's output, or the model as it was."""
    if choice == "none":
        return model, {"name": "none"}
    # It imports its helpers lazily (sympy for shape inference among them), so an ImportError can
    # come from optimize_model as well as from the import.
    try:
        from onnxruntime.transformers import optimizer
        opt = optimizer.optimize_model(model, model_type="bert", num_heads=c["heads"],
                                       hidden_size=c["hidden"], opt_level=0)
        fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    except Exception as e:  # noqa: BLE001 - reported, and `auto` falls back to the plain graph
        reason = f"onnxruntime.transformers.optimizer failed: {type(e).__name__}: {e} ({PIP})"
        if choice == "transformers":
            raise RuntimeError(reason) from None
        return model, {"name": "none", "reason": reason}
    return opt.model, {"name": "onnxruntime.transformers.optimizer (bert)", "fused": fused}


class Encoder:
    """Tokenizer plus ONNX Runtime session: texts in, float32 embeddings out."""

    def __init__(self, model_dir, threads, optimizer_choice, np, ort, onnx_mods, load_file, Tokenizer):
        helper, numpy_helper, TensorProto = onnx_mods
        self.np = np
        self.cfg = load_config(model_dir)
        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.cfg["max_seq_length"])
        w = load_weights(model_dir, load_file, np)
        model = build_model(w, self.cfg, np, helper, numpy_helper, TensorProto)
        model, self.optimizer = transformer_optimize(model, self.cfg, optimizer_choice)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def token_ids(self, text, max_length=None):
        text = text.strip()
        if self.cfg["lower"]:
            text = text.lower()
        ids = self.tokenizer.encode(text).ids
        if max_length is not None and len(ids) > max_length:
            ids = ids[: max_length - 1] + ids[-1:]  # keep [SEP]
        return ids

    def batch(self, id_lists):
        np = self.np
        seq = max(len(ids) for ids in id_lists)
        ids = np.zeros((len(id_lists), seq), np.int64)
        mask = np.zeros((len(id_lists), seq), np.int64)
        for i, row in enumerate(id_lists):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def run(self, feed):
        return self.sess.run(["embeddings"], feed)[0]


def sentences_per_second(enc, feed, batch, seconds):
    for _ in range(3):
        enc.run(feed)
    best = 0.0
    for _ in range(3):
        runs, start = 0, time.perf_counter()
        while True:
            enc.run(feed)
            runs += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / 3:
                break
        best = max(best, batch * runs / elapsed)
    return best


def bench_texts(enc, length, n):
    """n token-id lists of the given length class, deterministic."""
    if length == "short":
        return [enc.token_ids(CORPUS[i % len(CORPUS)]) for i in range(n)]
    out = []
    for i in range(n):
        parts, j = [], i
        while len(enc.token_ids(" ".join(parts))) < LONG_TOKENS:
            parts.append(CORPUS[j % len(CORPUS)])
            j += 1
        out.append(enc.token_ids(" ".join(parts), LONG_TOKENS))
    return out


def main():
    ap = argparse.ArgumentParser(description="ONNX Runtime timing of a sentence-transformers BERT model.")
    ap.add_argument("model_dir", help="sentence-transformers model directory")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads")
    ap.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    ap.add_argument("--seconds", type=float, default=1.0, help="timing budget per (length, batch)")
    ap.add_argument("--optimizer", choices=["auto", "transformers", "none"], default="auto")
    ap.add_argument("--texts-json", metavar="FILE", help="embed the JSON list of strings in FILE instead of timing")
    ap.add_argument("--corpus-json", metavar="FILE",
                    help='time the texts of FILE, {"short": [...], "long": [...]}, instead of the built-in corpus')
    args = ap.parse_args()
    try:
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer
    except ImportError as e:
        print(json.dumps({"error": f"python package {e.name} is not installed: {PIP}"}))
        return 0

    texts = None
    if args.texts_json:
        try:
            texts = read_json(args.texts_json)
        except (OSError, json.JSONDecodeError) as e:
            print(json.dumps({"error": f"cannot read --texts-json {args.texts_json}: {e}"}))
            return 1
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            print(json.dumps({"error": "--texts-json must hold a non-empty JSON list of strings"}))
            return 1
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        print(json.dumps({"error": f"--batches must be comma-separated integers, not {args.batches!r}"}))
        return 1
    try:
        enc = Encoder(args.model_dir, args.threads, args.optimizer, np, ort,
                      (helper, numpy_helper, TensorProto), load_file, Tokenizer)
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as e:
        print(json.dumps({"error": f"cannot build the model from {args.model_dir}: {e}"}))
        return 1

    common = {"onnxruntime": ort.__version__, "optimizer": enc.optimizer, "threads": args.threads}
    if texts is not None:
        ids = [enc.token_ids(t) for t in texts]
        emb = enc.run(enc.batch(ids))
        print(json.dumps({"embeddings": emb.astype(float).tolist(), "n_tokens": [len(i) for i in ids], **common}))
        return 0

    corpus = None
    if args.corpus_json:
        try:
            corpus = read_json(args.corpus_json)
        except (OSError, json.JSONDecodeError) as e:
            print(json.dumps({"error": f"cannot read --corpus-json {args.corpus_json}: {e}"}))
            return 1
        ok = isinstance(corpus, dict) and all(
            isinstance(corpus.get(k), list) and len(corpus[k]) >= max(batches) for k in ("short", "long"))
        if not ok:
            print(json.dumps({"error": "--corpus-json must hold short and long lists of at least max(batches) texts"}))
            return 1

    rates, tokens = {}, {}
    for length in ("short", "long"):
        if corpus is not None:
            ids = [enc.token_ids(t, enc.cfg["max_seq_length"]) for t in corpus[length][:max(batches)]]
        else:
            ids = bench_texts(enc, length, max(batches))
        tokens[length] = sum(len(i) for i in ids) / len(ids)
        rates[length] = {str(b): sentences_per_second(enc, enc.batch(ids[:b]), b, args.seconds) for b in batches}
    check = enc.run(enc.batch([enc.token_ids(t) for t in CHECK]))
    print(json.dumps({
        **common,
        "sentences_per_s": rates,
        "mean_tokens": tokens,
        "timed": "ONNX Runtime run only; batches padded to their longest text",
        "check_sentences": CHECK,
        "check_embeddings": check.astype(float).tolist(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
