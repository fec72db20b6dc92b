"""Rewrites a .cu file for host execution: every `kernel<<<grid, block, smem, stream>>>(args)`
becomes `emu_launch(dim3(grid), dim3(block), [&] { kernel(args); })` (cuda_runtime.h here).
Usage: transform.py IN.cu OUT.cpp"""
import re
import sys


def split_top(text):
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()]


src = open(sys.argv[1]).read()
out, i = [], 0
launch = re.compile(r"(\w+)<<<(.*?)>>>\(", re.S)
while (m := launch.search(src, i)) is not None:
    out.append(src[i : m.start()])
    j, depth = m.end(), 1
    while depth:
        depth += {"(": 1, ")": -1}.get(src[j], 0)
        j += 1
    grid, block = split_top(m.group(2))[:2]
    out.append(f"emu_launch(dim3({grid}), dim3({block}), [&] {{ {m.group(1)}({src[m.end():j - 1]}); }})")
    i = j
out.append(src[i:])
open(sys.argv[2], "w").write("".join(out))
