"""Writes the host stand-ins emulate.sh links with the parity program: cuda_probe() reports an
(emulated) device, and every CUDA twin of gocor_cuda.h other than the emulated ones throws.
Usage: stubs.py cuda/gocor_cuda.h OUT.cpp NAME..."""
import re
import sys

header, out, emulated = sys.argv[1], sys.argv[2], set(sys.argv[3:])
lines = [
    '#include "cuda_util.cuh"',
    '#include "gocor_cuda.h"',
    "namespace gocor {",
    "namespace cuda {",
    "void require_device() {}",
    "}  // namespace cuda",
    "CudaInfo cuda_probe() {",
    "  CudaInfo i;",
    "  i.compiled = i.available = true;",
    '  i.name = "emulated on the CPU";',
    "  return i;",
    "}",
]
for decl, name in re.findall(r"^(void (\w+)_cuda\(.*?\));", open(header).read(), re.S | re.M):
    if name not in emulated:
        lines.append(decl + ' { throw Error(ErrorCode::Cuda, "not emulated"); }')
open(out, "w").write("\n".join(lines + ["}  // namespace gocor", ""]))
