//! Triton's shared memory manager: system (POSIX) and CUDA shared memory regions that clients
//! register by name, then name in requests as the place to read an input from or write an
//! output to.
//!
//! Every offset and size a request gives is checked against its region before any access.
//! Regions sit in the map behind `Arc`s and each request holds the ones it uses (see
//! [`RequestRegions`]), so unregistering a region that requests still use only frees its name;
//! its memory stays mapped until they finish.

mod cuda;
mod shm_name;
mod sigbus;
mod system;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::infer_response::InferResponse;
use cuda::{CudaRegion, CudaRuntime, IPC_HANDLE_SIZE};
use system::SystemRegion;

/// The operating system rules that differ (shared memory names, library names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Linux,
    MacOs,
}

impl Platform {
    pub fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::MacOs
        } else {
            Platform::Linux
        }
    }
}

/// Triton's `TRITONSERVER_MEMORY_CPU` / `TRITONSERVER_MEMORY_GPU` for regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    System,
    Cuda,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemRegionStatus {
    pub name: String,
    pub key: String,
    pub offset: u64,
    pub byte_size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaRegionStatus {
    pub name: String,
    pub device_id: u64,
    pub byte_size: u64,
}

const CLIENT_SHM_DISABLED: &str =
    "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable.";

/// Triton keeps keys with this prefix for the shared memory its Python backend creates.
const RESERVED_KEY_PREFIX: &str = "triton_python_backend_shm_region_";

struct Region {
    name: String,
    memory: Memory,
}

enum Memory {
    // Shared with the input views that read it in place.
    System(Arc<SystemRegion>),
    Cuda(CudaRegion),
}

impl Region {
    fn kind(&self) -> MemoryKind {
        match self.memory {
            Memory::System(_) => MemoryKind::System,
            Memory::Cuda(_) => MemoryKind::Cuda,
        }
    }

    fn byte_size(&self) -> usize {
        match &self.memory {
            Memory::System(s) => s.byte_size,
            Memory::Cuda(c) => c.byte_size,
        }
    }

    /// Whether the memory is still all there (a client may shrink a system object).
    fn check(&self) -> Result<()> {
        match &self.memory {
            Memory::System(s) => s.check(&self.name),
            Memory::Cuda(_) => Ok(()),
        }
    }

    /// Copies `data` to `offset`, which the caller checked.
    fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        match &self.memory {
            Memory::System(s) => {
                s.check(&self.name)?;
                // SAFETY: `offset + data.len()` is inside the mapped region (checked by the caller).
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), s.data().add(offset), data.len()) };
                s.check(&self.name)
            }
            Memory::Cuda(c) => c.write(&self.name, offset, data),
        }
    }
}

/// An input's bytes read in place from a system region, which it keeps mapped.
struct View {
    region: Arc<SystemRegion>,
    offset: usize,
    len: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: checked to lie inside the mapping, which lives as long as `region`; a client
        // shrinking the object underneath is caught by the SIGBUS watch.
        unsafe { std::slice::from_raw_parts(self.region.data().add(self.offset), self.len) }
    }
}

/// The regions one request reads and writes, held until its response is finished.
#[derive(Default)]
pub struct RequestRegions {
    inputs: Vec<Arc<Region>>,
    outputs: Vec<OutputTarget>,
}

struct OutputTarget {
    output: String,
    region: Arc<Region>,
    offset: usize,
    byte_size: usize,
}

impl RequestRegions {
    /// Whether `output` goes to a region (the response then carries no data for it).
    pub fn has_output(&self, output: &str) -> bool {
        self.outputs.iter().any(|t| t.output == output)
    }

    /// Writes the outputs that go to regions into them, leaving those outputs without data in
    /// the response, and fails if an input's region was cut short while the request ran.
    pub fn finish(&self, response: &mut InferResponse) -> Result<()> {
        for region in &self.inputs {
            region.check()?;
        }
        for tensor in &mut response.outputs {
            let Some(target) = self.outputs.iter().find(|t| t.output == tensor.name) else { continue };
            if tensor.data.len() > target.byte_size {
                return Err(Error::internal(format!(
                    "shared memory size specified with the request for output '{}' ({} bytes) should be at least {} bytes to hold the results",
                    tensor.name,
                    target.byte_size,
                    tensor.data.len()
                )));
            }
            target.region.write(target.offset, &tensor.data)?;
            tensor.data = Bytes::new();
        }
        Ok(())
    }
}

pub struct SharedMemoryManager {
    /// `--allow-client-shm`: whether clients may register and unregister regions.
    allow_client: bool,
    regions: Mutex<BTreeMap<String, Arc<Region>>>,
    cuda: OnceLock<std::result::Result<Arc<CudaRuntime>, String>>,
}

impl SharedMemoryManager {
    pub fn new(allow_client: bool) -> Self {
        SharedMemoryManager { allow_client, regions: Mutex::new(BTreeMap::new()), cuda: OnceLock::new() }
    }

    /// Whether the CUDA runtime loads here (it is loaded on first use).
    pub fn cuda_available(&self) -> bool {
        self.cuda_runtime().is_ok()
    }

    fn cuda_runtime(&self) -> std::result::Result<Arc<CudaRuntime>, String> {
        self.cuda.get_or_init(|| CudaRuntime::load().map(Arc::new)).clone()
    }

    /// Triton answers this before looking at a register or unregister request.
    pub fn check_allowed(&self) -> Result<()> {
        if self.allow_client {
            Ok(())
        } else {
            Err(Error::unsupported(CLIENT_SHM_DISABLED))
        }
    }

    /// Maps `byte_size` bytes from `offset` of the client's POSIX shared memory object `key`.
    pub fn register_system(&self, name: &str, key: &str, offset: u64, byte_size: u64) -> Result<()> {
        self.check_allowed()?;
        let unprefixed = key.trim_start_matches('/');
        if unprefixed.is_empty() {
            return Err(Error::invalid_arg(format!(
                "cannot register shared memory region '{name}' - invalid shm key '{key}'"
            )));
        }
        if unprefixed.starts_with(RESERVED_KEY_PREFIX) {
            return Err(Error::invalid_arg(format!(
                "cannot register shared memory region '{name}' with key '{key}' as the key contains the reserved prefix '{RESERVED_KEY_PREFIX}'"
            )));
        }
        self.insert(name, || Ok(Memory::System(Arc::new(SystemRegion::open(name, key, offset, byte_size)?))))
    }

    /// Opens a client's device buffer from its `cudaIpcMemHandle_t`.
    pub fn register_cuda(&self, name: &str, raw_handle: &[u8], device_id: i64, byte_size: u64) -> Result<()> {
        self.check_allowed()?;
        let runtime = self.cuda_runtime().map_err(|e| {
            Error::unsupported(format!(
                "failed to register CUDA shared memory region: '{name}', GPUs not supported ({e})"
            ))
        })?;
        let handle: [u8; IPC_HANDLE_SIZE] = raw_handle.try_into().map_err(|_| {
            Error::invalid_arg("'raw_handle' must be a valid base64 encoded cudaIpcMemHandle_t")
        })?;
        let invalid =
            || Error::invalid_arg(format!("failed to register shared memory region '{name}': invalid args"));
        let device_id = i32::try_from(device_id).map_err(|_| invalid())?;
        let byte_size = usize::try_from(byte_size).map_err(|_| invalid())?;
        self.insert(name, || Ok(Memory::Cuda(CudaRegion::open(runtime, name, handle, device_id, byte_size)?)))
    }

    fn insert(&self, name: &str, open: impl FnOnce() -> Result<Memory>) -> Result<()> {
        let mut regions = self.regions.lock();
        if regions.contains_key(name) {
            return Err(Error::already_exists(format!("shared memory region '{name}' already in manager")));
        }
        let region = Region { name: name.to_string(), memory: open()? };
        regions.insert(name.to_string(), Arc::new(region));
        Ok(())
    }

    /// Unregisters the region `name` of this kind (a region of another kind, or none, is left
    /// as it is, as in Triton), or every region of the kind when `name` is empty.
    pub fn unregister(&self, kind: MemoryKind, name: &str) -> Result<()> {
        self.check_allowed()?;
        let mut regions = self.regions.lock();
        if name.is_empty() {
            regions.retain(|_, r| r.kind() != kind);
        } else if regions.get(name).is_some_and(|r| r.kind() == kind) {
            regions.remove(name);
        }
        Ok(())
    }

    pub fn system_status(&self, name: &str) -> Result<Vec<SystemRegionStatus>> {
        self.status(MemoryKind::System, name, |r| match &r.memory {
            Memory::System(s) => Some(SystemRegionStatus {
                name: r.name.clone(),
                key: s.key.clone(),
                offset: s.offset as u64,
                byte_size: s.byte_size as u64,
            }),
            Memory::Cuda(_) => None,
        })
    }

    pub fn cuda_status(&self, name: &str) -> Result<Vec<CudaRegionStatus>> {
        self.status(MemoryKind::Cuda, name, |r| match &r.memory {
            Memory::Cuda(c) => Some(CudaRegionStatus {
                name: r.name.clone(),
                device_id: c.device_id as u64,
                byte_size: c.byte_size as u64,
            }),
            Memory::System(_) => None,
        })
    }

    /// Every region of `kind` when `name` is empty, else the one named, with Triton's errors.
    fn status<T>(
        &self,
        kind: MemoryKind,
        name: &str,
        describe: impl Fn(&Region) -> Option<T>,
    ) -> Result<Vec<T>> {
        let regions = self.regions.lock();
        if name.is_empty() {
            return Ok(regions.values().filter_map(|r| describe(r)).collect());
        }
        let region = regions.get(name).ok_or_else(|| {
            let kind = if kind == MemoryKind::System { "system" } else { "cuda" };
            Error::not_found(format!("Unable to find {kind} shared memory region: '{name}'"))
        })?;
        describe(region).map(|s| vec![s]).ok_or_else(|| {
            let (is, not) = if kind == MemoryKind::System { ("CUDA", "system") } else { ("system", "CUDA") };
            Error::not_found(format!(
                "The region named '{name}' is registered as {is} shared memory, not {not} shared memory"
            ))
        })
    }

    /// Triton's `GetMemoryInfo`: the region and the offset into it, once the request's offset
    /// and size are known to lie inside it.
    fn slice(&self, name: &str, offset: u64, byte_size: u64) -> Result<(Arc<Region>, usize)> {
        let region = self
            .regions
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("Unable to find shared memory region: '{name}'")))?;
        let size = region.byte_size() as u64;
        if offset >= size {
            return Err(Error::invalid_arg(format!("Invalid offset for shared memory region: '{name}'")));
        }
        let end = offset.checked_add(byte_size).ok_or_else(|| {
            Error::invalid_arg(format!(
                "Integer overflow detected: byte_size ({byte_size}) + offset ({offset}) exceeds maximum value ({}) for region '{name}'",
                u64::MAX
            ))
        })?;
        if end > size {
            return Err(Error::invalid_arg(format!(
                "Invalid offset + byte size for shared memory region: '{name}'"
            )));
        }
        region.check()?;
        Ok((region, offset as usize))
    }

    /// An input's `byte_size` bytes at `offset` of region `name`: read in place from system
    /// memory, copied from the device for CUDA.
    pub fn input(&self, uses: &mut RequestRegions, name: &str, offset: u64, byte_size: u64) -> Result<Bytes> {
        let (region, offset) = self.slice(name, offset, byte_size)?;
        let len = byte_size as usize;
        let data = match &region.memory {
            Memory::System(s) => Bytes::from_owner(View { region: s.clone(), offset, len }),
            Memory::Cuda(c) => Bytes::from(c.read(name, offset, len)?),
        };
        uses.inputs.push(region);
        Ok(data)
    }

    /// Sends `output` to `byte_size` bytes at `offset` of region `name`, written by
    /// [`RequestRegions::finish`].
    pub fn output(
        &self,
        uses: &mut RequestRegions,
        output: &str,
        name: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<()> {
        let (region, offset) = self.slice(name, offset, byte_size)?;
        uses.outputs.push(OutputTarget {
            output: output.to_string(),
            region,
            offset,
            byte_size: byte_size as usize,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests;
