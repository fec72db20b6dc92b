"""Rewrites a .cu file for host execution: every `kernel<<<grid, block, smem, stream>>>(args)`
becomes `emu_launch(dim3(grid), dim3(block), [&] { kernel(args); })` (cuda_runtime.h here), or
emu_launch_sync for a kernel that calls __syncthreads, directly or through the file's functions.
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


def bodies(text):
    """{function name: body} of the functions defined in text (by brace matching)."""
    found = {}
    for m in re.finditer(r"(\w+)\s*\([^;{}]*\)\s*(?:const\s*)?\{", text):
        j, depth = m.end(), 1
        while depth and j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        found[m.group(1)] = found.get(m.group(1), "") + text[m.end() : j]
    return found


src = open(sys.argv[1]).read()
# The functions that reach __syncthreads, to a fixed point over calls.
body = bodies(re.sub(r"//[^\n]*", "", src))
syncing = {"__syncthreads"}
while grown := {f for f, b in body.items() if f not in syncing and any(
        re.search(rf"\b{s}\s*\(", b) for s in syncing)}:
    syncing |= grown
out, i = [], 0
launch = re.compile(r"((?:\w+::)*\w+(?:<[\w, ]+>)?)<<<(.*?)>>>\(", re.S)
while (m := launch.search(src, i)) is not None:
    out.append(src[i : m.start()])
    j, depth = m.end(), 1
    while depth:
        depth += {"(": 1, ")": -1}.get(src[j], 0)
        j += 1
    grid, block = split_top(m.group(2))[:2]
    name = m.group(1).split("::")[-1].split("<")[0]
    launcher = "emu_launch_sync" if name in syncing else "emu_launch"
    out.append(f"{launcher}(dim3({grid}), dim3({block}), [&] {{ {m.group(1)}({src[m.end():j - 1]}); }})")
    i = j
out.append(src[i:])
open(sys.argv[2], "w").write("".join(out))
