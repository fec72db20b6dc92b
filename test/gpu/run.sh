#!/usr/bin/env bash
# One GPU session: configure and build the CUDA targets for Hopper, list the device, run the CPU-vs-
# CUDA parity program (every case of its table), its perf mode (CPU twin vs CUDA twin per case),
# then the kernel benchmark, and print a summary: parity checks passed and failed per operation,
# the failing lines, and the exit status of each step. Everything is tee'd to $OUT/gpu_log.txt
# (or ./gpu_log.txt); the parity output alone also goes to $OUT/parity.txt.
# Usage (repository root, on the GPU machine): bash test/gpu/run.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-.}"
LOG="$OUT/gpu_log.txt"
BUILD="${GOCOR_GPU_BUILD_DIR:-build-gpu}"
JOBS="${JOBS:-16}"
: >"$LOG"
log() { echo "== $*" | tee -a "$LOG"; }

log "$(date -u +%FT%TZ) $(uname -m) $(nproc) cores"
nvidia-smi -L 2>&1 | tee -a "$LOG"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
(command -v nvcc && nvcc --version | tail -1) 2>&1 | tee -a "$LOG"

log "configure"
t0=$(date +%s)
cmake -S . -B "$BUILD" -DGOCOR_CUDA=ON -DGOCOR_BUILD_TESTS=ON -DGOCOR_CUDA_ARCHITECTURES=90-real \
  -DCMAKE_BUILD_TYPE=Release 2>&1 | tail -5 | tee -a "$LOG" || { log "configure FAILED"; exit 1; }
log "build cuda_parity cuda_bench (-j$JOBS)"
cmake --build "$BUILD" -j"$JOBS" --target cuda_parity cuda_bench 2>&1 | grep -Ev '^\[ *[0-9]+%\]' | tail -40 | tee -a "$LOG"
if [ ! -x "$BUILD/cuda_parity" ] || [ ! -x "$BUILD/cuda_bench" ]; then log "build FAILED"; exit 1; fi
log "build took $(( $(date +%s) - t0 )) s"

log "parity"
timeout 200 "$BUILD/cuda_parity" 2>&1 | tee "$OUT/parity.txt" | tee -a "$LOG"
parity=${PIPESTATUS[0]}
log "parity exit $parity"

log "parity --perf"
timeout 150 "$BUILD/cuda_parity" --perf 2>&1 | tee -a "$LOG"
perf=${PIPESTATUS[0]}
log "parity --perf exit $perf"

log "bench"
timeout 150 "$BUILD/cuda_bench" 2>&1 | tee -a "$LOG"
bench=${PIPESTATUS[0]}
log "bench exit $bench"
nvidia-smi --query-gpu=clocks.sm,temperature.gpu,power.draw --format=csv 2>&1 | tee -a "$LOG"

log "summary"
{
  echo "parity: $(grep -c '^PASS' "$OUT/parity.txt") passed, $(grep -c '^FAIL' "$OUT/parity.txt") failed (exit $parity)"
  # Lines are "PASS|FAIL <op> <case> ...": checks per operation.
  awk '/^(PASS|FAIL) / { n[$2]++; if ($1 == "FAIL") f[$2]++ }
       END { for (op in n) printf "  %-34s %3d checks, %d failed\n", op, n[op], f[op] }' \
    "$OUT/parity.txt" | sort
  grep '^FAIL' "$OUT/parity.txt" | head -40
  echo "parity --perf exit $perf, bench exit $bench"
} 2>&1 | tee -a "$LOG"
[ "$parity" -eq 0 ] && [ "$perf" -eq 0 ] && [ "$bench" -eq 0 ]
