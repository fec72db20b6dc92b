// The one pool of large blocks: working memory of the stages and the binding's inputs and outputs.
//
// Why: a freed block of a few MiB goes back to the system more often than not (glibc trims an
// arena's top past 128 KiB until a large mmapped block happens to be freed, and every libuv thread
// that runs a job has its own arena), and mapping it again costs a page fault per 4 KiB page:
// 11-21 us each in a VM, 8,000-20,000 of them for one 512x512 match. Kept here, a block serves the
// next request of its size class on any thread, so a call repeated on a shape maps nothing.
//
// Blocks from kBlockPoolFrom up are kept, up to kBlockKeepBytes in all (the least recently freed
// given back first); blocks of 2 MiB or more are whole, 2 MiB aligned transparent huge pages.
// blocks_trim() gives every kept block back (match does so between the stages of a large pair).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace gocor {

constexpr size_t kBlockPoolFrom = size_t{256} << 10;
constexpr size_t kBlockKeepBytes = size_t{256} << 20;

// The capacity of the block that serves a request of `bytes`: from 2 MiB up a multiple of 2 MiB,
// from kBlockPoolFrom a multiple of 64 KiB, below that `bytes` rounded up to 64. Blocks of one
// capacity serve each other's requests, so a block's capacity follows from the size asked for.
size_t block_capacity(size_t bytes);

// A block of block_capacity(bytes) bytes, 64-byte aligned (2 MiB aligned from 2 MiB up), its
// contents undefined: a kept one when the pool has one of that capacity, else a new one. Throws
// std::bad_alloc when the memory is not there.
void* block_take(size_t bytes);
// Gives back a block of block_take(bytes) (the same `bytes`, or any with the same capacity).
void block_give(void* p, size_t bytes) noexcept;
// Frees every kept block (none is in use by the pool itself).
void blocks_trim() noexcept;
// Bytes the pool keeps now (tests, diagnostics).
size_t blocks_kept_bytes() noexcept;

// While one of these lives (on any thread), given-back blocks are freed instead of kept: a large
// problem's stages (match on a pair of kMatchRetainPixels or more) free planes of sizes that no
// later request asks for, and keeping them would add them to the peak.
class BlocksUnkept {
 public:
  BlocksUnkept() noexcept;
  ~BlocksUnkept();
  BlocksUnkept(const BlocksUnkept&) = delete;
  BlocksUnkept& operator=(const BlocksUnkept&) = delete;
};

// std::allocator for large working vectors: element arrays of kBlockPoolFrom bytes or more come
// from the pool, smaller ones from operator new.
template <class T>
struct BlockAllocator {
  using value_type = T;
  BlockAllocator() noexcept = default;
  template <class U>
  BlockAllocator(const BlockAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    if (n > static_cast<size_t>(-1) / sizeof(T)) throw std::bad_alloc();
    return static_cast<T*>(block_take(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { block_give(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const BlockAllocator<U>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const BlockAllocator<U>&) const noexcept {
    return false;
  }
};

// A working plane whose memory outlives it in the pool.
template <class T>
using PooledVector = std::vector<T, BlockAllocator<T>>;

}  // namespace gocor
