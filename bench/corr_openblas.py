#!/usr/bin/env python3
"""OpenBLAS sgemm (through numpy) on the shapes of corr_bench's global correlation.

out (M x N) = Q^T F with Q (C x M) and F (C x N), float32, single thread: the same product
gocor's corr_global_cpu computes. Prints JSON lines:
  {"op":"openblas_sgemm","N":256,"M":256,"C":512,"threads":1,"ms":...,"gflops":...,"kernel":"..."}
The workplace sets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for old OpenBLAS builds; they slow a
current one, so this process drops them before numpy loads OpenBLAS.
"""
import os

os.environ.pop("OPENBLAS_CORETYPE", None)
os.environ.pop("OPENBLAS_L2_SIZE", None)
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import ctypes  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def openblas_kernel():
    """Name of the OpenBLAS core that runs, from the library numpy loaded."""
    try:
        from threadpoolctl import threadpool_info  # optional

        for info in threadpool_info():
            if info.get("internal_api") == "openblas":
                return f"{info.get('architecture')} ({info.get('version')}, threads {info.get('num_threads')})"
    except ImportError:
        pass
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    libs += glob.glob(os.path.join(os.path.dirname(np.__file__), ".libs", "*openblas*"))
    for path in libs:
        lib = ctypes.CDLL(path)
        for sym in ("scipy_openblas_get_corename64_", "openblas_get_corename64_",
                    "scipy_openblas_get_corename", "openblas_get_corename"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return "unknown"


def best_ms(fn, budget_ms):
    fn()
    t = time.perf_counter()
    fn()
    first = (time.perf_counter() - t) * 1e3
    reps = max(3, min(200, int(budget_ms / max(first, 1e-3))))
    best = first
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t) * 1e3)
    return best


def main():
    quick = os.environ.get("GOCOR_BENCH_QUICK") == "1"
    budget = 150.0 if quick else 600.0
    kernel = openblas_kernel()
    rng = np.random.default_rng(0)
    for side in (16, 32, 64):
        for c in (64, 256, 512):
            n = side * side
            q = rng.uniform(-1, 1, (c, n)).astype(np.float32)
            f = rng.uniform(-1, 1, (c, n)).astype(np.float32)
            out = np.empty((n, n), dtype=np.float32)
            ms = best_ms(lambda: np.matmul(q.T, f, out=out), budget)
            print(json.dumps({"op": "openblas_sgemm", "N": n, "M": n, "C": c, "threads": 1,
                              "ms": round(ms, 4), "gflops": round(2.0 * n * n * c / (ms * 1e6), 2),
                              "kernel": kernel}), flush=True)


if __name__ == "__main__":
    main()
