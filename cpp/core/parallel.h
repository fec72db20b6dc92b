// A process-wide, bounded worker pool. Every parallel loop of the core runs here, so that many
// concurrent calls (a Node service's AsyncWorkers) share hardware_concurrency() threads instead of
// each spawning its own and oversubscribing the cores.
#pragma once

#include <cstdint>
#include <functional>

namespace gocor {

// Number of worker threads the pool uses at most (hardware concurrency, or GOCOR_THREADS).
int pool_size();

// Runs fn(i) for i in [0, n), on at most `threads` threads (<= 0: pool_size()), the caller
// included. Blocks until every index is done; while the caller waits for other threads' items, it
// runs the items of the loops those items started (so a caller whose share ran out helps the
// nested loops still running instead of idling). Exceptions thrown by fn are rethrown (the first
// one) after all running items finish. Items are handed out dynamically in order, so uneven work
// balances.
void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& fn);

// Splits [0, n) into contiguous chunks, one per task, and runs fn(begin, end) on each.
void parallel_chunks(int64_t n, int threads, int64_t min_chunk,
                     const std::function<void(int64_t, int64_t)>& fn);

}  // namespace gocor
