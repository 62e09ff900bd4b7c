#!/usr/bin/env python3
"""Times ONNX Runtime on the kernel benchmark's CNN, using the weights Tandem wrote.

Usage: ort_cnn.py WEIGHTS.safetensors [--threads 2] [--batches 1,8,64] [--seconds 1.0]

The safetensors file holds c1/c2/fc weights and biases plus an `input` batch. The model is
built here with onnx.helper (conv, relu, conv, relu, maxpool 2, flatten, gemm) so both
runtimes see identical weights. Prints one JSON object: images/s per batch size and the
logits for `input`, or {"error": ...} when a package is missing.
"""

import argparse
import json
import sys
import time


def build_model(t, helper, numpy_helper, TensorProto):
    inits = [numpy_helper.from_array(t[name], name) for name in
             ("c1.weight", "c1.bias", "c2.weight", "c2.bias", "fc.weight", "fc.bias")]
    nodes = [
        helper.make_node("Conv", ["x", "c1.weight", "c1.bias"], ["h1"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2.weight", "c2.bias"], ["h2"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tandem_bench_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def images_per_second(sess, np, batch, seconds):
    rng = np.random.default_rng(batch)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    for _ in range(3):
        sess.run(None, {"x": x})
    best = 0.0
    for _ in range(3):
        runs, start = 0, time.perf_counter()
        while True:
            sess.run(None, {"x": x})
            runs += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / 3:
                break
        best = max(best, batch * runs / elapsed)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    try:
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
        from safetensors.numpy import load_file
    except ImportError as e:
        print(json.dumps({"error": f"python package {e.name} is not installed"}))
        return 0

    t = load_file(args.weights)
    model = build_model(t, helper, numpy_helper, TensorProto)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    logits = sess.run(None, {"x": t["input"]})[0]
    rates = {b: images_per_second(sess, np, int(b), args.seconds)
             for b in args.batches.split(",")}
    print(json.dumps({
        "onnxruntime": ort.__version__,
        "threads": args.threads,
        "images_per_s": rates,
        "logits": [float(v) for v in logits.reshape(-1)],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
