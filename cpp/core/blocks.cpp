#include "blocks.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_set>

namespace gocor {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kPoolStep = size_t{64} << 10;

// Pooled sizes are mapped by the pool itself, not taken from malloc: a block given back while
// BlocksUnkept lives returns to the system at once, whatever malloc's thresholds, and kept blocks
// never pin an arena. Sanitizer builds take every block from operator new, so that overflows and
// leaks stay visible.
#if defined(__SANITIZE_ADDRESS__)
#define GOCOR_BLOCKS_MAPPED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GOCOR_BLOCKS_MAPPED 0
#endif
#endif
#ifndef GOCOR_BLOCKS_MAPPED
#define GOCOR_BLOCKS_MAPPED 1
#endif

size_t alignment_of(size_t cap) {
  return cap >= kHugePage ? kHugePage : 64;
}

void* new_block(size_t cap) {
#if GOCOR_BLOCKS_MAPPED
  if (cap >= kBlockPoolFrom) {
    // Huge blocks 2 MiB aligned: map 2 MiB more, unmap the slack on both sides.
    const size_t align = cap >= kHugePage ? kHugePage : 4096, len = cap + (align - 4096);
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    const uintptr_t b = reinterpret_cast<uintptr_t>(m);
    const uintptr_t p = (b + align - 1) / align * align;
    if (p > b) munmap(m, p - b);
    if (b + len > p + cap) munmap(reinterpret_cast<void*>(p + cap), b + len - (p + cap));
    return reinterpret_cast<void*>(p);
  }
#endif
  return ::operator new(cap, std::align_val_t(alignment_of(cap)));
}

void free_block(void* p, size_t cap) noexcept {
#if GOCOR_BLOCKS_MAPPED
  if (cap >= kBlockPoolFrom) {
    munmap(p, cap);
    return;
  }
#endif
  ::operator delete(p, cap, std::align_val_t(alignment_of(cap)));
}

struct Block {
  void* p;
  size_t cap;
};

// Kept blocks, least recently freed first. Taken and given back on any thread (libuv's, the
// core's pool, the main thread's finalizers), hence the lock.
struct Pool {
  std::mutex mu;
  std::vector<Block> kept;
  size_t bytes = 0;
  std::unordered_set<void*> work;  // WorkVector blocks in use (work_take)
};
Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: finalizers may give blocks back at exit
  return *p;
}

std::atomic<int> unkept{0};  // live BlocksUnkept scopes

}  // namespace

size_t block_capacity(size_t bytes) {
  const size_t step = bytes >= kHugePage ? kHugePage : bytes >= kBlockPoolFrom ? kPoolStep : 64;
  return bytes <= static_cast<size_t>(-1) - step ? (bytes + step - 1) / step * step : bytes;
}

void* block_take(size_t bytes) {
  const size_t cap = block_capacity(bytes == 0 ? 1 : bytes);
  if (cap >= kBlockPoolFrom) {
    Pool& pl = pool();
    std::lock_guard<std::mutex> lock(pl.mu);
    // The most recently freed block of this capacity: the likeliest to be in cache still.
    for (size_t i = pl.kept.size(); i-- > 0;) {
      if (pl.kept[i].cap != cap) continue;
      void* p = pl.kept[i].p;
      pl.bytes -= cap;
      pl.kept.erase(pl.kept.begin() + static_cast<std::ptrdiff_t>(i));
      return p;
    }
  }
  void* p = new_block(cap);
#ifdef MADV_HUGEPAGE
  if (cap >= kHugePage) madvise(p, cap, MADV_HUGEPAGE);  // a hint only: 512 times fewer faults
#endif
#ifdef MADV_POPULATE_WRITE
  // A new pooled block's pages in one call rather than one fault each. A hint only.
  if (cap >= kBlockPoolFrom && cap < kHugePage) {
    const uintptr_t page = 4096, b = reinterpret_cast<uintptr_t>(p) / page * page;
    const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + cap + page - 1) / page * page;
    madvise(reinterpret_cast<void*>(b), e - b, MADV_POPULATE_WRITE);
  }
#endif
  return p;
}

void block_give(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
  const size_t cap = block_capacity(bytes == 0 ? 1 : bytes);
  if (cap < kBlockPoolFrom || cap > kBlockKeepBytes || unkept.load() > 0) {
    free_block(p, cap);
    return;
  }
  std::vector<Block> evicted;
  {
    Pool& pl = pool();
    std::lock_guard<std::mutex> lock(pl.mu);
    try {
      pl.kept.push_back({p, cap});
    } catch (...) {  // no room to remember it: freed instead
      free_block(p, cap);
      return;
    }
    pl.bytes += cap;
    size_t drop = 0;
    while (pl.bytes > kBlockKeepBytes) pl.bytes -= pl.kept[drop++].cap;
    if (drop > 0) {
      try {
        evicted.assign(pl.kept.begin(), pl.kept.begin() + static_cast<std::ptrdiff_t>(drop));
      } catch (...) {  // freed under the lock instead
        for (size_t i = 0; i < drop; ++i) free_block(pl.kept[i].p, pl.kept[i].cap);
      }
      pl.kept.erase(pl.kept.begin(), pl.kept.begin() + static_cast<std::ptrdiff_t>(drop));
    }
  }
  for (const Block& b : evicted) free_block(b.p, b.cap);
}

void blocks_trim() noexcept {
  std::vector<Block> all;
  {
    Pool& pl = pool();
    std::lock_guard<std::mutex> lock(pl.mu);
    all.swap(pl.kept);
    pl.bytes = 0;
  }
  for (const Block& b : all) free_block(b.p, b.cap);
}

BlocksUnkept::BlocksUnkept() noexcept {
  ++unkept;
}
BlocksUnkept::~BlocksUnkept() {
  --unkept;
}

bool blocks_unkept() noexcept {
  return unkept.load() > 0;
}

void* work_take(size_t bytes) {
  void* p = block_take(bytes);
  try {
    Pool& pl = pool();
    std::lock_guard<std::mutex> lock(pl.mu);
    pl.work.insert(p);
  } catch (...) {
    block_give(p, bytes);
    throw;
  }
  return p;
}

bool work_give(void* p, size_t bytes) noexcept {
  {
    Pool& pl = pool();
    std::lock_guard<std::mutex> lock(pl.mu);
    if (pl.work.erase(p) == 0) return false;
  }
  block_give(p, bytes);
  return true;
}

size_t blocks_kept_bytes() noexcept {
  Pool& pl = pool();
  std::lock_guard<std::mutex> lock(pl.mu);
  return pl.bytes;
}

}  // namespace gocor
