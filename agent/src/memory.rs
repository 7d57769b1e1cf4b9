//! Memory that content moves through: buffers used again instead of new
//! pages, and the C allocator's thresholds for the receiver.
//!
//! A sender hands chunked content to QUIC in frame batches of about
//! 640 KiB, which the stream keeps until they are acknowledged. Allocated
//! anew, each batch's pages were faulted in on first write: three quarters
//! of a sender's page faults on a large file, 35,000-64,000 per GiB. A
//! batch the stream is done with comes back to a small free list
//! ([`FRAMES`], [`Recycled`]) and is written again without a fault: about
//! 8,000 faults per GiB.
//!
//! A receiver allocates each received datagram and each 1 MiB batch of
//! chunks for a few milliseconds; with glibc's defaults the arena's top is
//! trimmed as soon as they are freed and the next ones fault their pages in
//! again. [`tune_receiver_allocator`] keeps buffers below 4 MiB in the
//! arenas and up to 8 MiB free at an arena's top: page faults per GiB
//! received 21,000-59,000 -> about 8,000. It is for the receiver
//! only: a sender's scan runs on many threads, each with its own arena, and
//! with these thresholds its peak memory on 200,000 files went from 45 to
//! 62 MiB.

use std::sync::{Mutex, PoisonError};

/// Frame batches kept for reuse. Acknowledgements free batches in bursts:
/// with 4 kept, half of the faults stayed; 16 (10 MiB) left a sender
/// about 8,000 faults per GiB, its peak memory unchanged (the batches in
/// flight are what the send window allows, free or not).
const KEEP: usize = 16;

/// A free list of buffers.
pub struct FramePool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// The process's frame batches.
pub static FRAMES: FramePool = FramePool::new();

impl FramePool {
    pub const fn new() -> FramePool {
        FramePool {
            free: Mutex::new(Vec::new()),
        }
    }

    /// An empty buffer of at least `capacity` bytes, reused if one is free.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let reused = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .filter(|b| b.capacity() >= capacity);
        match reused {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Puts a buffer someone is done with on the free list (if there is
    /// room; otherwise it is freed).
    pub fn recycle(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < KEEP {
            free.push(buf);
        }
    }
}

impl Default for FramePool {
    fn default() -> FramePool {
        FramePool::new()
    }
}

/// A buffer owned by a stream's `Bytes`: recycled when dropped.
pub struct Recycled(pub Vec<u8>, pub &'static FramePool);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        self.1.recycle(std::mem::take(&mut self.0));
    }
}

/// Buffers up to this size come from the arenas rather than `mmap`.
const MMAP_THRESHOLD: i32 = 4 << 20;
/// Free memory at the top of an arena kept before it is returned.
const TRIM_THRESHOLD: i32 = 8 << 20;

/// Sets the allocator's thresholds for a receiver (see the module's doc).
/// The one `unsafe` block of Ferry's code: a foreign call with two
/// integers, for which no safe binding exists. Returns whether the
/// allocator took both (a libc other than glibc may not: then nothing
/// changes but the page faults).
#[allow(unsafe_code)]
pub fn tune_receiver_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets two allocator parameters, under the
        // allocator's own lock; no memory is touched.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_both_thresholds() {
        assert!(tune_receiver_allocator());
    }

    #[test]
    fn a_dropped_frame_batch_is_written_again_and_the_free_list_stays_small() {
        static POOL: FramePool = FramePool::new();
        let mut buf = POOL.take(1 << 20);
        buf.extend_from_slice(b"frames");
        let ptr = buf.as_ptr();
        let bytes = bytes::Bytes::from_owner(Recycled(buf, &POOL));
        assert_eq!(&bytes[..], b"frames");
        drop(bytes);
        let again = POOL.take(1 << 20);
        assert!(again.is_empty());
        assert!(again.capacity() >= 1 << 20);
        assert_eq!(again.as_ptr(), ptr, "the dropped batch's memory is reused");
        // A free buffer too small for what is asked is not handed out.
        POOL.recycle(Vec::with_capacity(16));
        assert!(POOL.take(1 << 20).capacity() >= 1 << 20);
        for _ in 0..KEEP + 10 {
            POOL.recycle(Vec::with_capacity(16));
        }
        assert_eq!(POOL.free.lock().unwrap().len(), KEEP);
    }
}
