#!/usr/bin/env python3
"""OpenBLAS sgemm (through numpy) on the shapes of corr_bench's global correlation.

out (M x N) = Q^T F with Q (C x M) and F (C x N), float32, single thread: the same product
gocor's corr_global_cpu computes. Prints JSON lines:
  {"op":"openblas_sgemm","N":256,"M":256,"C":512,"threads":1,"ms":...,"gflops":...,"kernel":"..."}
With `--fresh P C REPS` (bench/api.js) it times `q.T @ f` with a fresh output array per call, as
gocor's correlate() returns one, and prints the medians of REPS calls (process CPU time: ms; wall
time: wall_ms) as one JSON line.
The workplace sets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for old OpenBLAS builds; they slow a
current one, so this process drops them before numpy loads OpenBLAS.
"""
import os

os.environ.pop("OPENBLAS_CORETYPE", None)
os.environ.pop("OPENBLAS_L2_SIZE", None)
# An older OpenBLAS (Debian 12's 0.3.21) does not recognise every CPU and then runs its SSE3
# "Prescott" kernels; GOCOR_OPENBLAS_CORETYPE names the core to force (bench/api.js passes
# SkylakeX on AVX-512, Haswell on AVX2), so the reference is OpenBLAS at its best on this CPU.
if os.environ.get("GOCOR_OPENBLAS_CORETYPE"):
    os.environ["OPENBLAS_CORETYPE"] = os.environ["GOCOR_OPENBLAS_CORETYPE"]
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import ctypes  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
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
    try:  # a system OpenBLAS (Debian's numpy loads it through libblas.so.3)
        with open("/proc/self/maps") as maps:
            libs += sorted({line.split()[-1] for line in maps if "openblas" in line and ".so" in line})
    except OSError:
        pass
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


def fresh(positions, c, reps):
    rng = np.random.default_rng(0)
    q = rng.uniform(-1, 1, (c, positions)).astype(np.float32)
    f = rng.uniform(-1, 1, (c, positions)).astype(np.float32)
    cpu, wall = [], []
    for i in range(reps + 2):
        c0, t0 = time.process_time(), time.perf_counter()
        out = q.T @ f
        if i >= 2:
            cpu.append((time.process_time() - c0) * 1e3)
            wall.append((time.perf_counter() - t0) * 1e3)
        del out
    ms = sorted(cpu)[len(cpu) // 2]
    print(json.dumps({"op": "openblas_sgemm_fresh", "N": positions, "M": positions, "C": c,
                      "kernel": openblas_kernel(), "numpy": np.__version__,
                      "threads": 1, "ms": round(ms, 4),
                      "wall_ms": round(sorted(wall)[len(wall) // 2], 4),
                      "gflops": round(2.0 * positions * positions * c / (ms * 1e6), 2)}), flush=True)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--fresh":
        fresh(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return
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
