"""Writes the host stand-ins emulate.sh links with the parity program: cuda_probe() reports an
(emulated) device, and every CUDA twin of gocor_cuda.h that the emulated sources do not define
throws. A twin is declared there with its CPU twin's type (decltype(name_cpu) name_cuda), so the
stand-in takes its parameter list from the CPU twin's declaration in cpp/core.
Usage: stubs.py cuda/gocor_cuda.h CORE_DIR OUT.cpp SOURCE.cu..."""
import glob
import re
import sys

header, core, out = sys.argv[1], sys.argv[2], sys.argv[3]
emulated = set()
for source in sys.argv[4:]:
    emulated |= set(re.findall(r"^void (\w+)_cuda\(", open(source).read(), re.M))
params = {}
for h in glob.glob(f"{core}/*.h"):
    for name, args in re.findall(r"^void (\w+)_cpu\((.*?)\);", open(h).read(), re.S | re.M):
        params[name] = re.sub(r"\s*=\s*[^,)]+", "", args)  # no default arguments in a definition
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
for name in re.findall(r"^decltype\((\w+)_cpu\) \1_cuda;", open(header).read(), re.M):
    if name not in emulated:
        lines.append(f'void {name}_cuda({params[name]}) {{ throw Error(ErrorCode::Cuda, "not emulated"); }}')
open(out, "w").write("\n".join(lines + ["}  // namespace gocor", ""]))
