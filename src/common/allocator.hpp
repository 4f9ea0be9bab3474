// How the service uses glibc's allocator for message-sized buffers.
//
// A drain allocates and frees a few buffers of message size per message (the
// literal as read, the Redis command carrying the job). With glibc's defaults
// a buffer of megabytes is a fresh mmap, or heap growth trimmed again as soon
// as it is freed, so every message pays for the kernel zeroing and faulting in
// the same amount of memory again (page faults and page zeroing were about a
// fifth of the CPU of the benchmark's 5 MB drain, bench/RESULTS.md).
// Kept in the heap instead, it is reused by the next message; a watcher that
// moved that much memory gives it back to the system once its pass is over.
#pragma once

#include <cstddef>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace mailroom::allocator {

// Passes that moved at least this many bytes release free memory afterwards.
inline constexpr std::size_t release_after_bytes = 16u * 1024 * 1024;

// Call once at start-up, before threads exist.
inline void keep_message_buffers_in_heap() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);  // a 25 MiB message still comes from the heap
  mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
#endif
}

// Returns free heap memory to the system (after a large pass).
inline void release_free_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace mailroom::allocator
