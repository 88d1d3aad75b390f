//! The server's shared memory for one stub: blocks it writes tensors into (request inputs, BLS
//! outputs), in segments created as needed and reused once the tensors are done with.
//!
//! Blocks are powers of two from 256 bytes, kept on a free list per size: reuse is a pop, and
//! offsets stay aligned for every datatype. The stub's arena (nereid_ipc.py) follows the same
//! rules for the tensors it sends.

use std::collections::HashMap;
use std::sync::Arc;

use nereid_core::{Error, Result};
use parking_lot::Mutex;

use crate::shm::{segment_name, Segment};

const MIN_BLOCK: usize = 256;
const MIN_SEGMENT: usize = 1 << 20;

pub fn block_size(len: usize) -> usize {
    len.max(MIN_BLOCK).next_power_of_two()
}

/// Has the stub map a new segment (id, name, size) before any message refers to it.
pub type Announce<'a> = &'a dyn Fn(u32, &str, usize) -> Result<()>;

pub struct Arena {
    state: Mutex<State>,
    /// One grower at a time, without holding `state`: the stub may be freeing meanwhile.
    grow: Mutex<u64>,
}

#[derive(Default)]
struct State {
    segments: Vec<Arc<Segment>>,
    top: usize,
    free: HashMap<usize, Vec<(u32, usize)>>,
}

/// A block of the arena, returned to it on drop.
pub struct Block {
    arena: Arc<Arena>,
    segment: Arc<Segment>,
    pub segment_id: u32,
    pub offset: usize,
    pub len: usize,
}

impl Block {
    pub fn write(&self, data: &[u8]) {
        // SAFETY: the block is ours alone until sent; `data` fits (checked by the caller's length).
        unsafe { self.segment.write(self.offset, &data[..self.len.min(data.len())]) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let mut state = self.arena.state.lock();
        state.free.entry(block_size(self.len)).or_default().push((self.segment_id, self.offset));
    }
}

impl State {
    fn take(&mut self, size: usize) -> Option<(u32, usize)> {
        if let Some(block) = self.free.get_mut(&size).and_then(Vec::pop) {
            return Some(block);
        }
        let last = self.segments.last()?;
        if self.top + size > last.len() {
            return None;
        }
        let offset = self.top;
        self.top += size;
        Some((self.segments.len() as u32 - 1, offset))
    }
}

impl Arena {
    pub fn new() -> Arc<Arena> {
        Arc::new(Arena { state: Mutex::new(State::default()), grow: Mutex::new(0) })
    }

    /// A block for `len` (> 0) bytes, growing the arena when none is free.
    pub fn alloc(self: &Arc<Self>, len: usize, announce: Announce) -> Result<Block> {
        if let Some(block) = self.take(len) {
            return Ok(block);
        }
        let mut counter = self.grow.lock();
        if let Some(block) = self.take(len) {
            return Ok(block);
        }
        let last = self.state.lock().segments.last().map_or(0, |s| s.len());
        let segment_len = block_size(len).max(2 * last).max(MIN_SEGMENT);
        let (segment, name) = loop {
            *counter += 1;
            let name = segment_name(std::process::id(), *counter);
            match Segment::create(&name, segment_len) {
                Ok(segment) => break (segment, name),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(Error::internal(format!(
                        "failed to create a shared memory segment of {segment_len} bytes: {e}"
                    )))
                }
            }
        };
        let id = self.state.lock().segments.len() as u32;
        let announced = announce(id, &name, segment_len);
        Segment::unlink(&name);
        announced?;
        let mut state = self.state.lock();
        state.segments.push(Arc::new(segment));
        state.top = 0;
        let found = state.take(block_size(len)).expect("a new segment holds the block");
        Ok(self.block(&state, found, len))
    }

    fn take(self: &Arc<Self>, len: usize) -> Option<Block> {
        let mut state = self.state.lock();
        let found = state.take(block_size(len))?;
        Some(self.block(&state, found, len))
    }

    fn block(self: &Arc<Self>, state: &State, (segment_id, offset): (u32, usize), len: usize) -> Block {
        let segment = state.segments[segment_id as usize].clone();
        Block { arena: self.clone(), segment, segment_id, offset, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_are_powers_of_two() {
        assert_eq!(block_size(0), 256);
        assert_eq!(block_size(256), 256);
        assert_eq!(block_size(257), 512);
        assert_eq!(block_size(64_000_000), 1 << 26);
    }

    #[test]
    fn blocks_are_reused_and_segments_grow() {
        let arena = Arena::new();
        let announced = Mutex::new(Vec::new());
        let announce = |id: u32, _: &str, size: usize| {
            announced.lock().push((id, size));
            Ok(())
        };
        let a = arena.alloc(1000, &announce).unwrap();
        let b = arena.alloc(1000, &announce).unwrap();
        assert_eq!((a.segment_id, a.offset, b.offset), (0, 0, 1024));
        drop(a);
        let c = arena.alloc(900, &announce).unwrap();
        assert_eq!((c.segment_id, c.offset), (0, 0));
        let big = arena.alloc(3 << 20, &announce).unwrap();
        assert_eq!(big.segment_id, 1);
        assert_eq!(*announced.lock(), vec![(0, MIN_SEGMENT), (1, 4 << 20)]);
        big.write(&[7; 16]);
    }

    #[test]
    fn a_refused_announcement_fails_the_allocation() {
        let arena = Arena::new();
        let refuse = |_: u32, _: &str, _: usize| Err(Error::internal("stub gone"));
        assert!(arena.alloc(10, &refuse).is_err());
    }
}
