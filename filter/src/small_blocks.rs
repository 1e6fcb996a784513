//! A small-block front for an allocator: the `.wasm`'s global allocator (wasm32 only, see
//! `lib.rs`), in front of the standard library's dlmalloc.
//!
//! Why: a request allocates and frees a few dozen small blocks (header lines, the message, the
//! REST path, the host's buffers), and in wasm every `Box`/`Vec` allocation went through four
//! calls (`__rust_alloc` → `__rdl_alloc` → `malloc` → `dlmalloc`) and dlmalloc's bins: about a
//! fifth of a bodiless request's guest instructions (callgrind, bench/OPTIMISATIONS.md).
//! Here a block of at most [`MAX_SMALL`] bytes comes from a free list per 16-byte size class, a
//! pop or a push, and a list that is empty is refilled from a chunk taken from the backing
//! allocator. Larger blocks, and alignments above 16, go to the backing allocator unchanged.
//!
//! `alloc` and `dealloc` are kept out of line: inlined into every allocation site they made the
//! module 25 KB larger for no measurable gain in instructions.
//!
//! What it costs: a freed small block stays on its class's list (it is reused by the next
//! allocation of its class, never handed back to the backing allocator), so the memory held for
//! small blocks is the most ever live at once in each class, plus at most one partly used chunk.
//!
//! Plain Rust over any [`GlobalAlloc`]: the native tests run it over [`std::alloc::System`].
//! Not thread-safe: a wasm32-wasip1 module has one thread, and only that build makes it global.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr::null_mut;

/// Size and alignment step of the classes.
const GRANULE: usize = 16;
/// The largest block served from a class (64 classes of 16..=1024 bytes).
pub const MAX_SMALL: usize = 1024;
const CLASSES: usize = MAX_SMALL / GRANULE;
/// What is taken from the backing allocator when a class has no free block.
const CHUNK: usize = 64 * 1024;

/// A free block: the next one on its class's list, stored in the block itself.
struct FreeBlock {
    next: *mut FreeBlock,
}

struct State {
    /// Per class: the most recently freed block.
    free: [*mut FreeBlock; CLASSES],
    /// The unused part of the current chunk.
    bump: *mut u8,
    bump_end: *mut u8,
}

/// The small-block front over `backing`.
pub struct SmallBlocks<A> {
    backing: A,
    state: UnsafeCell<State>,
}

impl<A> SmallBlocks<A> {
    /// A front with no chunk yet.
    pub const fn new(backing: A) -> Self {
        SmallBlocks {
            backing,
            state: UnsafeCell::new(State {
                free: [null_mut(); CLASSES],
                bump: null_mut(),
                bump_end: null_mut(),
            }),
        }
    }
}

/// SAFETY: a wasm32-wasip1 module runs on one thread (no shared memory, no threads), so the
/// state is never touched from two threads; only that build makes the front global.
#[cfg(target_arch = "wasm32")]
unsafe impl<A: Sync> Sync for SmallBlocks<A> {}

/// The class of `layout`, `None` when the backing allocator serves it.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_SMALL || layout.align() > GRANULE {
        return None;
    }
    Some(layout.size().max(1).div_ceil(GRANULE) - 1)
}

/// SAFETY (of the whole impl): the state is only touched from one thread (see the module doc);
/// a class block is `(class + 1) * GRANULE` bytes at a `GRANULE`-aligned address inside a chunk,
/// so it holds any layout of its class, and a `FreeBlock` (one pointer) fits in the smallest.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SmallBlocks<A> {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            return self.backing.alloc(layout);
        };
        let state = &mut *self.state.get();
        let head = state.free[class];
        if !head.is_null() {
            state.free[class] = (*head).next;
            return head.cast();
        }
        self.carve(state, (class + 1) * GRANULE)
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            return self.backing.dealloc(ptr, layout);
        };
        let state = &mut *self.state.get();
        let block = ptr.cast::<FreeBlock>();
        (*block).next = state.free[class];
        state.free[class] = block;
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class_of(layout).is_none() {
            // The backing allocator knows when fresh memory is already zero.
            return self.backing.alloc_zeroed(layout);
        }
        let ptr = self.alloc(layout);
        if !ptr.is_null() {
            ptr.write_bytes(0, layout.size());
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the alignment, does not overflow.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class_of(layout), class_of(new_layout)) {
            (Some(old), Some(new)) if old == new => ptr,
            // Both large: the backing allocator may grow in place.
            (None, None) => self.backing.realloc(ptr, layout, new_size),
            _ => {
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    moved.copy_from_nonoverlapping(ptr, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                moved
            }
        }
    }
}

impl<A: GlobalAlloc> SmallBlocks<A> {
    /// A block of `size` bytes from the current chunk, after taking a new chunk when it is used
    /// up (the rest of the old one is left unused: less than [`MAX_SMALL`] bytes).
    #[cold]
    unsafe fn carve(&self, state: &mut State, size: usize) -> *mut u8 {
        if (state.bump_end as usize) - (state.bump as usize) < size {
            // SAFETY: CHUNK and GRANULE are a valid non-zero size and a power of two.
            let chunk = self.backing.alloc(Layout::from_size_align_unchecked(CHUNK, GRANULE));
            if chunk.is_null() {
                return null_mut();
            }
            state.bump = chunk;
            state.bump_end = chunk.add(CHUNK);
        }
        let block = state.bump;
        state.bump = block.add(size);
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_cover_small_layouts_and_leave_the_rest_to_the_backing_allocator() {
        assert_eq!(class_of(layout(0, 1)), Some(0));
        assert_eq!(class_of(layout(1, 1)), Some(0));
        assert_eq!(class_of(layout(16, 8)), Some(0));
        assert_eq!(class_of(layout(17, 1)), Some(1));
        assert_eq!(class_of(layout(MAX_SMALL, 16)), Some(CLASSES - 1));
        assert_eq!(class_of(layout(MAX_SMALL + 1, 1)), None);
        assert_eq!(class_of(layout(8, 32)), None);
    }

    #[test]
    fn blocks_are_distinct_aligned_writable_and_reused_after_free() {
        let a = SmallBlocks::new(System);
        unsafe {
            let mut live = Vec::new();
            // Enough blocks to need several chunks.
            for i in 0..3000usize {
                let l = layout(1 + i % MAX_SMALL, 1 << (i % 5));
                let p = a.alloc(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % l.align(), 0);
                p.write_bytes((i % 251) as u8, l.size());
                live.push((p, l, (i % 251) as u8));
            }
            for &(p, l, byte) in &live {
                assert!(std::slice::from_raw_parts(p, l.size()).iter().all(|&b| b == byte));
            }
            // A freed block is the next one of its class.
            let (p, l, _) = live.swap_remove(100);
            a.dealloc(p, l);
            assert_eq!(a.alloc(layout(l.size().div_ceil(16) * 16, 1)), p);
            a.dealloc(p, l);
            for (p, l, _) in live {
                a.dealloc(p, l);
            }
        }
    }

    #[test]
    fn large_and_overaligned_blocks_and_zeroed_blocks() {
        let a = SmallBlocks::new(System);
        unsafe {
            for l in [layout(MAX_SMALL + 1, 8), layout(1 << 20, 16), layout(64, 64)] {
                let p = a.alloc(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % l.align(), 0);
                p.write_bytes(7, l.size());
                a.dealloc(p, l);
            }
            // A reused small block is zeroed when asked.
            let l = layout(40, 8);
            let p = a.alloc(l);
            p.write_bytes(0xff, 40);
            a.dealloc(p, l);
            let z = a.alloc_zeroed(l);
            assert_eq!(z, p);
            assert!(std::slice::from_raw_parts(z, 40).iter().all(|&b| b == 0));
            a.dealloc(z, l);
        }
    }

    #[test]
    fn realloc_keeps_contents_within_and_across_classes() {
        let a = SmallBlocks::new(System);
        unsafe {
            let mut l = layout(10, 1);
            let mut p = a.alloc(l);
            for i in 0..10 {
                *p.add(i) = i as u8;
            }
            // Same class: same block.
            assert_eq!(a.realloc(p, l, 16), p);
            l = layout(16, 1);
            // Growing through the classes and past them, then shrinking back.
            for size in [100, MAX_SMALL, MAX_SMALL + 1, 5000, 300, 10] {
                p = a.realloc(p, l, size);
                assert!(!p.is_null());
                assert_eq!(std::slice::from_raw_parts(p, 10), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
                l = layout(size, 1);
            }
            a.dealloc(p, l);
        }
    }
}
