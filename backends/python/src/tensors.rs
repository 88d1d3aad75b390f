//! Tensors between the server and one stub. They travel through shared memory: messages carry
//! only `{name, datatype, shape, segment, offset, length}`, where the segment is the sender's.
//!
//! What the server sends lives in its [`Arena`] until the stub is done; what the stub sends is
//! wrapped without a copy into the `Bytes` of a core tensor, and the stub gets the block back
//! ("free") once that tensor is dropped. An output that is part of one of its request's inputs
//! comes back as `{input, start}`: the server slices the input it already has.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nereid_core::tensor::{element_count, DataType, Tensor};
use nereid_core::{Error, Result};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::arena::{Arena, Block};
use crate::channel::Side;
use crate::shm::Segment;

/// Freed stub blocks are told in batches: with the next execute, or once this many gather.
const FREE_BATCH: usize = 32;

pub struct Transfer {
    arena: Arc<Arena>,
    side: Arc<Side>,
    timeout: Duration,
    /// The stub's segments, mapped here.
    peer: Mutex<HashMap<u32, Arc<Segment>>>,
    frees: Arc<Frees>,
    /// Server blocks the stub holds (BLS outputs), until it says "free".
    lent: Mutex<HashMap<(u64, u64), Block>>,
}

/// Stub blocks the server is done with, not yet told.
struct Frees {
    side: Arc<Side>,
    pending: Mutex<Vec<[u64; 3]>>,
}

impl Frees {
    fn release(&self, block: [u64; 3]) {
        let mut pending = self.pending.lock();
        pending.push(block);
        if pending.len() >= FREE_BATCH {
            let free = std::mem::take(&mut *pending);
            drop(pending);
            // A stub that has gone has nothing to free.
            let _ = self.side.send(&json!({"op": "free", "free": free}));
        }
    }
}

/// A stub block inside a core tensor's `Bytes`.
struct PeerBlock {
    segment: Arc<Segment>,
    id: u32,
    offset: usize,
    len: usize,
    frees: Arc<Frees>,
}

impl AsRef<[u8]> for PeerBlock {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the stub wrote the block before sending it and reuses it only after "free".
        unsafe { self.segment.slice(self.offset, self.len) }
    }
}

impl Drop for PeerBlock {
    fn drop(&mut self) {
        self.frees.release([u64::from(self.id), self.offset as u64, self.len as u64]);
    }
}

impl Transfer {
    pub fn new(side: Arc<Side>, timeout: Duration) -> Transfer {
        Transfer {
            arena: Arena::new(),
            frees: Arc::new(Frees { side: side.clone(), pending: Mutex::new(Vec::new()) }),
            side,
            timeout,
            peer: Mutex::new(HashMap::new()),
            lent: Mutex::new(HashMap::new()),
        }
    }

    /// Writes `tensor` into shared memory: its description, and the block to keep until the
    /// stub is done with it (`None` for an empty tensor).
    pub fn send(&self, tensor: &Tensor) -> Result<(Value, Option<Block>)> {
        let mut wire = json!({
            "name": tensor.name,
            "datatype": tensor.datatype.as_str(),
            "shape": tensor.shape,
            "length": tensor.data.len(),
        });
        if tensor.data.is_empty() {
            return Ok((wire, None));
        }
        let announce = |segment: u32, name: &str, size: usize| {
            let message = json!({"op": "map", "segment": segment, "name": name, "size": size});
            self.side.call(message, self.timeout).map(drop)
        };
        let block = self.arena.alloc(tensor.data.len(), &announce)?;
        block.write(&tensor.data);
        wire["segment"] = block.segment_id.into();
        wire["offset"] = block.offset.into();
        Ok((wire, Some(block)))
    }

    /// Keeps a block the stub now holds until it frees it.
    pub fn lend(&self, block: Block) {
        self.lent.lock().insert((u64::from(block.segment_id), block.offset as u64), block);
    }

    /// The stub is done with these server blocks (`[[segment, offset, length], ...]`).
    pub fn returned(&self, free: &Value) {
        let mut lent = self.lent.lock();
        for block in free.as_array().into_iter().flatten() {
            if let (Some(segment), Some(offset)) = (block[0].as_u64(), block[1].as_u64()) {
                lent.remove(&(segment, offset));
            }
        }
    }

    /// Stub blocks freed since the last call, told with the next execute.
    pub fn take_frees(&self) -> Vec<[u64; 3]> {
        std::mem::take(&mut *self.frees.pending.lock())
    }

    /// Maps a segment the stub announced.
    pub fn map_peer(&self, message: &Value) -> Result<()> {
        let (Some(id), Some(name), Some(size)) =
            (message["segment"].as_u64(), message["name"].as_str(), message["size"].as_u64())
        else {
            return Err(Error::internal("malformed shared memory announcement from the stub"));
        };
        let segment = Segment::open(name, size as usize)
            .map_err(|e| Error::internal(format!("failed to map the stub's shared memory '{name}': {e}")))?;
        self.peer.lock().insert(id as u32, Arc::new(segment));
        Ok(())
    }

    /// A tensor the stub described; `inputs` are the inputs of the request it answers.
    pub fn receive(&self, wire: &Value, inputs: &[Tensor]) -> Result<Tensor> {
        let malformed = || Error::internal(format!("malformed tensor from the stub: {wire}"));
        let name = wire["name"].as_str().ok_or_else(malformed)?;
        let datatype = wire["datatype"].as_str().and_then(DataType::parse).ok_or_else(malformed)?;
        let shape: Vec<i64> = wire["shape"]
            .as_array()
            .ok_or_else(malformed)?
            .iter()
            .map(|d| d.as_i64().ok_or_else(malformed))
            .collect::<Result<_>>()?;
        let len = wire["length"].as_u64().ok_or_else(malformed)? as usize;
        let expected = datatype.byte_size().and_then(|size| element_count(&shape).map(|n| n * size));
        if expected.is_some_and(|expected| expected != len) {
            return Err(Error::internal(format!(
                "output '{name}' has {len} bytes, but its shape {shape:?} of {} needs {}",
                datatype.as_str(),
                expected.unwrap_or(0)
            )));
        }
        let data = if len == 0 {
            Bytes::new()
        } else if let Some(input) = wire.get("input") {
            let source = input.as_u64().and_then(|i| inputs.get(i as usize)).ok_or_else(malformed)?;
            let start = wire["start"].as_u64().ok_or_else(malformed)? as usize;
            if start.checked_add(len).is_none_or(|end| end > source.data.len()) {
                return Err(malformed());
            }
            source.data.slice(start..start + len)
        } else {
            let id = wire["segment"].as_u64().ok_or_else(malformed)? as u32;
            let offset = wire["offset"].as_u64().ok_or_else(malformed)? as usize;
            let segment = self.peer.lock().get(&id).cloned().ok_or_else(malformed)?;
            if offset.checked_add(len).is_none_or(|end| end > segment.len()) {
                return Err(malformed());
            }
            Bytes::from_owner(PeerBlock { segment, id, offset, len, frees: self.frees.clone() })
        };
        Ok(Tensor { name: name.to_string(), datatype, shape, data })
    }
}
