#!/usr/bin/env python3
"""Classical optical-flow peers for bench/accuracy.js, through OpenCV's Python bindings.

  peers.py --describe         prints {"cv2": version, "settings": {method: description}} as JSON
  peers.py JOBS.json          runs every job [{"method", "a", "b", "out"}] and prints
                              {"times": [wall s per job], "cpu": [CPU s per job]} as JSON on stdout

Each job reads a and b as gray uint8 (cv2.IMREAD_GRAYSCALE), computes the flow from a to b on a's
grid (a(x) ~ b(x + flow(x)), the project's convention and OpenCV's) with one OpenCV thread, and
writes it to `out` as a Middlebury .flo. The times (wall and process CPU) are of the flow
computation alone (no decoding, no writing). Progress goes to stderr. Exit status 3 when cv2 (or cv2.optflow) is missing.
"""
import json
import sys
import time

try:
    import cv2
    import numpy as np

    HAVE_OPTFLOW = hasattr(cv2, "optflow")
except ImportError:  # the benchmark then skips the peers with a note
    sys.stderr.write("peers.py: this Python has no cv2 (OpenCV bindings)\n")
    sys.exit(3)

# Farneback for large motion: 5 pyramid levels at scale 0.5, 21 px window, 5 iterations, polyN 7
# with sigma 1.5 (OpenCV's sample uses 3 levels / 15 px, which misses the larger displacements).
FARNEBACK = dict(pyr_scale=0.5, levels=5, winsize=21, iterations=5, poly_n=7, poly_sigma=1.5, flags=0)

SETTINGS = {
    "dis": "cv2.DISOpticalFlow_create(DISOPTICAL_FLOW_PRESET_MEDIUM), default refinement",
    "deepflow": "cv2.optflow.createOptFlow_DeepFlow(), default parameters",
    "farneback": "cv2.calcOpticalFlowFarneback(" + ", ".join(f"{k}={v}" for k, v in FARNEBACK.items()) + ")",
}


def flow_dis(a, b):
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)


def flow_deepflow(a, b):
    return cv2.optflow.createOptFlow_DeepFlow().calc(a, b, None)


def flow_farneback(a, b):
    return cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK)


METHODS = {"dis": flow_dis, "deepflow": flow_deepflow, "farneback": flow_farneback}


def write_flo(path, flow):
    """flow: (H, W, 2) float32, u then v per pixel, as the .flo layout."""
    h, w = flow.shape[:2]
    with open(path, "wb") as f:
        np.array([202021.25], dtype="<f4").tofile(f)
        np.array([w, h], dtype="<i4").tofile(f)
        np.ascontiguousarray(flow, dtype="<f4").tofile(f)


def main():
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__)
        sys.exit(2)
    if sys.argv[1] == "--describe":
        settings = SETTINGS if HAVE_OPTFLOW else {k: v for k, v in SETTINGS.items() if k != "deepflow"}
        print(json.dumps({"cv2": cv2.__version__, "settings": settings}))
        return
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    cv2.setNumThreads(1)
    times = []
    cpu = []
    for i, job in enumerate(jobs):
        a = cv2.imread(job["a"], cv2.IMREAD_GRAYSCALE)
        b = cv2.imread(job["b"], cv2.IMREAD_GRAYSCALE)
        if a is None or b is None:
            raise SystemExit(f"peers.py: cannot read {job['a']} or {job['b']}")
        c0 = time.process_time()
        t0 = time.perf_counter()
        flow = METHODS[job["method"]](a, b)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        write_flo(job["out"], flow)
        sys.stderr.write(f"\rpeers {i + 1}/{len(jobs)} {job['method']:<9} {times[-1]:6.2f} s   ")
    sys.stderr.write("\n")
    print(json.dumps({"times": times, "cpu": cpu}))


if __name__ == "__main__":
    main()
