#!/usr/bin/env python3
"""Times numpy's float32 matrix product (OpenBLAS in the PyPI wheel) on n x n x n.

Usage: numpy_gemm.py [--n 1024] [--threads 2] [--seconds 1.0]

The anchor for `tandem bench kernels`' GEMM figure: the same sizes on the same machine in the
same run. The thread count is set before numpy loads, through the variables OpenBLAS reads.
Prints one JSON object, {"gflops": ..., "blas": ...}, or {"error": ...}.
"""

import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    try:
        import numpy as np
    except ImportError as e:
        print(json.dumps({"error": f"numpy is not installed: {e}"}))
        return
    rng = np.random.default_rng(0)
    a = rng.random((args.n, args.n), dtype=np.float32)
    b = rng.random((args.n, args.n), dtype=np.float32)
    c = np.empty_like(a)
    for _ in range(2):
        np.matmul(a, b, out=c)
    best = float("inf")
    for _ in range(3):
        runs, start = 0, time.perf_counter()
        while True:
            np.matmul(a, b, out=c)
            runs += 1
            elapsed = time.perf_counter() - start
            if elapsed >= args.seconds / 3:
                break
        best = min(best, elapsed / runs)
    blas = "unknown"
    try:
        info = np.show_config(mode="dicts")
        blas = info["Build Dependencies"]["blas"]["name"]
    except Exception:  # noqa: BLE001 - the name is informative only
        pass
    print(json.dumps({"gflops": 2 * args.n ** 3 / best / 1e9, "blas": blas, "n": args.n}))


if __name__ == "__main__":
    sys.exit(main())
