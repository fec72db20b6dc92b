// The one pool of large blocks, and the working vectors of large problems.
//
// The pool: the binding's copies of inputs and the volumes it returns (FreshF32) are blocks that
// the pool maps itself. Given back, a block serves the next request of its size class on any
// thread, so a call repeated on a shape maps nothing: mapping a fresh block costs a page fault per
// 4 KiB page (10-20 us each in a VM), and libuv's threads each have their own malloc arena, so a
// block freed by one would not serve another. Blocks from kBlockPoolFrom up are kept, up to
// kBlockKeepBytes in all (the least recently freed given back first); blocks of 2 MiB or more are
// whole, 2 MiB aligned transparent huge pages. blocks_trim() gives every kept block back.
//
// WorkVector: a stage's large working planes. Normally they come from malloc (whose arenas recycle
// them from stage to stage and call to call); while a BlocksUnkept lives (a large problem: match on
// a pair of kMatchRetainPixels or more), their blocks of kBlockPoolFrom or more are mapped by the
// pool and unmapped as soon as they are freed, so that a freed plane of a size no later request
// asks for is not resident at the peak, whatever malloc keeps.
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

// While one of these lives (on any thread), given-back blocks are freed instead of kept and
// WorkVector's large blocks are mapped by the pool: a large problem's stages (match on a pair of
// kMatchRetainPixels or more) free planes of sizes that no later request asks for, and keeping
// them would add them to the peak.
class BlocksUnkept {
 public:
  BlocksUnkept() noexcept;
  ~BlocksUnkept();
  BlocksUnkept(const BlocksUnkept&) = delete;
  BlocksUnkept& operator=(const BlocksUnkept&) = delete;
};

// Whether a BlocksUnkept lives.
bool blocks_unkept() noexcept;
// A block of the pool for a WorkVector (inside BlocksUnkept), remembered as such, and its return:
// work_give takes any WorkVector block back (returns false for one that work_take did not make).
void* work_take(size_t bytes);
bool work_give(void* p, size_t bytes) noexcept;

template <class T>
struct WorkAllocator {
  using value_type = T;
  WorkAllocator() noexcept = default;
  template <class U>
  WorkAllocator(const WorkAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    if (n > static_cast<size_t>(-1) / sizeof(T)) throw std::bad_alloc();
    const size_t bytes = n * sizeof(T);
    if (bytes >= kBlockPoolFrom && blocks_unkept()) return static_cast<T*>(work_take(bytes));
    return static_cast<T*>(::operator new(bytes, std::align_val_t(64)));
  }
  void deallocate(T* p, size_t n) noexcept {
    const size_t bytes = n * sizeof(T);
    if (bytes >= kBlockPoolFrom && work_give(p, bytes)) return;
    ::operator delete(p, bytes, std::align_val_t(64));
  }
  template <class U>
  bool operator==(const WorkAllocator<U>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const WorkAllocator<U>&) const noexcept {
    return false;
  }
};

// A stage's large working plane (see above); 64-byte aligned.
template <class T>
using WorkVector = std::vector<T, WorkAllocator<T>>;

}  // namespace gocor
