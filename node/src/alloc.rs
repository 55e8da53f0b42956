//! A global allocator that serves very large allocations from `MAP_NORESERVE` mappings.
//!
//! Kafka decoders (the `kafka-protocol` crate's among them) size vectors from untrusted
//! length fields before reading the elements: a 30-byte frame can claim 2^31 array entries.
//! Frames are bounded (`--max-request-bytes`), and decoding stops at the end of the frame,
//! so only a bounded number of elements is ever written; but the up-front reservation can
//! exceed physical memory and, through the standard allocator, abort the process.
//!
//! Here allocations of 64 MiB and more are mapped with `MAP_NORESERVE`: the kernel hands out
//! address space without committing memory (under the default overcommit heuristic,
//! `vm.overcommit_memory=0`), pages are only backed when touched, and the mapping is released
//! when the vector is dropped. A hostile length therefore costs address space for the
//! lifetime of one failed decode, never memory. Smaller allocations go to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at or above this size are mapped lazily.
const LAZY_THRESHOLD: usize = 64 << 20;
const PAGE: usize = 4096;

/// The node's global allocator.
pub struct LazyLargeAlloc;

fn round_up(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

unsafe impl GlobalAlloc for LazyLargeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < LAZY_THRESHOLD || layout.align() > PAGE {
            // SAFETY: forwarded with the caller's valid layout.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: anonymous private mapping; no file descriptor or existing memory involved.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                round_up(layout.size()),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p as *mut u8
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < LAZY_THRESHOLD || layout.align() > PAGE {
            // SAFETY: ptr came from System.alloc with this layout (same branch condition).
            unsafe { System.dealloc(ptr, layout) };
            return;
        }
        // SAFETY: ptr came from our mmap of round_up(layout.size()) bytes.
        unsafe {
            libc::munmap(ptr as *mut libc::c_void, round_up(layout.size()));
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() < LAZY_THRESHOLD || layout.align() > PAGE {
            // SAFETY: forwarded with the caller's valid layout.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // Fresh anonymous mappings are zero-filled.
        unsafe { self.alloc(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_small = layout.size() < LAZY_THRESHOLD || layout.align() > PAGE;
        let new_small = new_size < LAZY_THRESHOLD || layout.align() > PAGE;
        if old_small && new_small {
            // SAFETY: both sides are System allocations with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: new_size is non-zero and the alignment is the caller's valid one.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both regions are valid for the smaller of the two sizes and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_reservation_costs_no_memory() {
        let a = LazyLargeAlloc;
        // 64 GiB: more than this machine's memory; must succeed lazily.
        let layout = Layout::from_size_align(64 << 30, 8).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            *p = 7;
            *p.add((64 << 30) - 1) = 9;
            assert_eq!(*p, 7);
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn realloc_across_threshold_keeps_bytes() {
        let a = LazyLargeAlloc;
        let small = Layout::from_size_align(1024, 8).unwrap();
        unsafe {
            let p = a.alloc(small);
            for i in 0..1024 {
                *p.add(i) = (i % 251) as u8;
            }
            let q = a.realloc(p, small, LAZY_THRESHOLD * 2);
            for i in 0..1024 {
                assert_eq!(*q.add(i), (i % 251) as u8);
            }
            let big = Layout::from_size_align(LAZY_THRESHOLD * 2, 8).unwrap();
            let r = a.realloc(q, big, 2048);
            assert_eq!(*r.add(1000), (1000 % 251) as u8);
            a.dealloc(r, Layout::from_size_align(2048, 8).unwrap());
        }
    }
}
