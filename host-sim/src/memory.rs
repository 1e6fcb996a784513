//! Bounds-checked access to a guest's linear memory.
//!
//! Every pointer and length that comes from the guest is untrusted: reads and writes are checked
//! against the memory's current size and fail with [`MemoryError`], which the ABI glue turns into
//! `INVALID_MEMORY_ACCESS` (spec: "point to invalid memory address"). Nothing here panics on guest
//! input. Values handed back to the guest are allocated with the guest's own allocator
//! (`proxy_on_memory_allocate`, or `malloc` in its absence), so ownership passes to the guest as
//! the Rust SDK expects (`Vec::from_raw_parts` on the returned pointer).

use std::sync::Arc;
use wasmtime::{AsContextMut, Memory, TypedFunc};

/// A guest memory access that cannot be satisfied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// The module exports no memory named `memory`.
    #[error("guest exports no memory")]
    NoMemory,
    /// `ptr..ptr+len` is outside the guest's memory.
    #[error("guest memory access out of bounds: {ptr:#x}+{len}")]
    OutOfBounds {
        /// Start of the access.
        ptr: u32,
        /// Length of the access.
        len: u32,
    },
    /// The guest has no allocator export, or it returned null.
    #[error("guest allocator unavailable or failed for {0} bytes")]
    AllocationFailed(usize),
    /// The guest allocator trapped.
    #[error("guest allocator trapped: {0}")]
    AllocatorTrapped(String),
    /// A length larger than the host accepts in one call.
    #[error("guest buffer of {0} bytes exceeds the host limit")]
    TooLarge(u32),
}

/// The guest's memory and allocator, resolved once per instance.
///
/// Cloned on every host call (the host functions borrow the store mutably while they use it),
/// so the allocator sits behind an `Arc`: cloning a `TypedFunc` clones its registered type.
#[derive(Clone)]
pub struct GuestMemory {
    memory: Option<Memory>,
    allocate: Option<Arc<TypedFunc<u32, u32>>>,
}

impl GuestMemory {
    /// Wraps an instance's exports. Either may be missing; calls that need them then fail cleanly.
    pub fn new(memory: Option<Memory>, allocate: Option<TypedFunc<u32, u32>>) -> Self {
        GuestMemory {
            memory,
            allocate: allocate.map(Arc::new),
        }
    }

    fn memory(&self) -> Result<Memory, MemoryError> {
        self.memory.ok_or(MemoryError::NoMemory)
    }

    /// Copies `len` bytes at `ptr` out of the guest. `max` bounds `len` before anything is copied.
    pub fn read(&self, store: impl AsContextMut, ptr: u32, len: u32, max: usize) -> Result<Vec<u8>, MemoryError> {
        if len as usize > max {
            return Err(MemoryError::TooLarge(len));
        }
        self.with_slice(store, ptr, len, |s| s.to_vec())
    }

    /// Reads a guest string (lossy UTF-8: names and paths from a buggy guest still produce a
    /// useful error message rather than a failure).
    pub fn read_string(&self, store: impl AsContextMut, ptr: u32, len: u32, max: usize) -> Result<String, MemoryError> {
        if len as usize > max {
            return Err(MemoryError::TooLarge(len));
        }
        // Straight from guest memory into the string (no intermediate copy); valid UTF-8, the
        // usual case, takes the standard validator rather than the lossy decoder.
        self.with_slice(store, ptr, len, |bytes| match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        })
    }

    /// Runs `f` on the guest bytes `ptr..ptr+len` without copying them.
    pub fn with_slice<R>(
        &self,
        mut store: impl AsContextMut,
        ptr: u32,
        len: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, MemoryError> {
        let memory = self.memory()?;
        let data = memory.data(store.as_context_mut());
        let start = ptr as usize;
        let end = start
            .checked_add(len as usize)
            .ok_or(MemoryError::OutOfBounds { ptr, len })?;
        data.get(start..end).map(f).ok_or(MemoryError::OutOfBounds { ptr, len })
    }

    /// Writes `bytes` at `ptr`.
    pub fn write(&self, mut store: impl AsContextMut, ptr: u32, bytes: &[u8]) -> Result<(), MemoryError> {
        let memory = self.memory()?;
        let len = u32::try_from(bytes.len()).map_err(|_| MemoryError::TooLarge(u32::MAX))?;
        let data = memory.data_mut(store.as_context_mut());
        let start = ptr as usize;
        let end = start
            .checked_add(bytes.len())
            .ok_or(MemoryError::OutOfBounds { ptr, len })?;
        data.get_mut(start..end)
            .ok_or(MemoryError::OutOfBounds { ptr, len })?
            .copy_from_slice(bytes);
        Ok(())
    }

    /// Writes a little-endian `u32` (the ABI's `size_t` and `uint32_t *` returns on wasm32).
    pub fn write_u32(&self, store: impl AsContextMut, ptr: u32, value: u32) -> Result<(), MemoryError> {
        self.write(store, ptr, &value.to_le_bytes())
    }

    /// Writes a little-endian `u64`.
    pub fn write_u64(&self, store: impl AsContextMut, ptr: u32, value: u64) -> Result<(), MemoryError> {
        self.write(store, ptr, &value.to_le_bytes())
    }

    /// Checks that `ptr..ptr+len` is writable now, before any side effect happens.
    pub fn check_writable(&self, store: impl AsContextMut, ptr: u32, len: u32) -> Result<(), MemoryError> {
        self.with_slice(store, ptr, len, |_| ())
    }

    /// Allocates `size` bytes with the guest's allocator. May grow the guest memory.
    pub fn allocate(&self, mut store: impl AsContextMut, size: usize) -> Result<u32, MemoryError> {
        let allocate = self.allocate.as_ref().ok_or(MemoryError::AllocationFailed(size))?;
        let size32 = u32::try_from(size).map_err(|_| MemoryError::AllocationFailed(size))?;
        let ptr = allocate
            .call(store.as_context_mut(), size32)
            .map_err(|e| MemoryError::AllocatorTrapped(format!("{e:#}")))?;
        if ptr == 0 {
            return Err(MemoryError::AllocationFailed(size));
        }
        Ok(ptr)
    }

    /// Hands `value` to the guest the way the ABI returns a buffer: allocate it in the guest,
    /// copy it in, and store the pointer at `ret_ptr` and the length at `ret_len`. An empty value
    /// is returned as a null pointer and zero length, without allocating (the Rust SDK maps that
    /// to an empty or absent value).
    pub fn return_bytes(
        &self,
        mut store: impl AsContextMut,
        value: &[u8],
        ret_ptr: u32,
        ret_len: u32,
    ) -> Result<(), MemoryError> {
        // Validate the return slots first so a bad pointer leaks no guest allocation.
        self.check_writable(store.as_context_mut(), ret_ptr, 4)?;
        self.check_writable(store.as_context_mut(), ret_len, 4)?;
        let ptr = if value.is_empty() {
            0
        } else {
            let ptr = self.allocate(store.as_context_mut(), value.len())?;
            self.write(store.as_context_mut(), ptr, value)?;
            ptr
        };
        self.write_u32(store.as_context_mut(), ret_ptr, ptr)?;
        self.write_u32(store, ret_len, value.len() as u32)
    }
}
