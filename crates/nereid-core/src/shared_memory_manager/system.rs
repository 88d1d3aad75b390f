//! System shared memory: a client's POSIX shared memory object, mapped into the server.

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{mmap, munmap, shm_open, MapFlags, ProtFlags};
use nix::sys::stat::{fstat, Mode};

use super::shm_name::{candidates, MACOS_NAME_MAX};
use super::sigbus::{watch, Watch};
use super::Platform;
use crate::error::{Error, Result};

/// A registered part of a client's object: `byte_size` bytes from `offset`.
pub(super) struct SystemRegion {
    pub key: String,
    pub offset: usize,
    pub byte_size: usize,
    object: OwnedFd,
    // Declared before `mapping`: the watch ends before the pages are unmapped.
    watch: Watch,
    mapping: Mapping,
}

impl SystemRegion {
    /// Opens the object the client created for `key` and maps the registered part of it,
    /// after checking that the object really holds it.
    pub fn open(name: &str, key: &str, offset: u64, byte_size: u64) -> Result<SystemRegion> {
        let object = open_object(key)?;
        let size = object_size(&object)
            .ok_or_else(|| Error::internal(format!("Invalid shared memory region: '{key}'")))?;
        let invalid =
            || Error::invalid_arg(format!("failed to register shared memory region '{name}': invalid args"));
        let end = offset.checked_add(byte_size).ok_or_else(invalid)?;
        if end > size {
            return Err(invalid());
        }
        let (offset, byte_size) = (usize::try_from(offset).map_err(|_| invalid())?, byte_size as usize);
        let length = NonZeroUsize::new(byte_size).ok_or_else(|| {
            Error::invalid_arg(format!(
                "failed to register shared memory region '{name}': byte size must be above 0"
            ))
        })?;
        let mapping = Mapping::new(&object, offset, length).map_err(|e| {
            Error::invalid_arg(format!(
                "failed to register shared memory region '{name}': unable to map it: {}",
                e.desc()
            ))
        })?;
        let watch = watch(mapping.start.as_ptr().cast(), mapping.len)?;
        Ok(SystemRegion { key: key.to_string(), offset, byte_size, object, watch, mapping })
    }

    /// The registered bytes. Call [`Self::check`] before and after using them.
    pub fn data(&self) -> *mut u8 {
        self.mapping.data
    }

    /// Fails when the object no longer holds the region, or was found shrunk during an access: a
    /// client may shrink it at any time (the SIGBUS watch covers the time between checks).
    pub fn check(&self, name: &str) -> Result<()> {
        let needed = (self.offset + self.byte_size) as u64;
        if self.watch.is_broken() || object_size(&self.object).is_none_or(|size| size < needed) {
            return Err(Error::invalid_arg(format!(
                "shared memory region '{name}' is no longer usable: its object '{}' was truncated below {needed} bytes",
                self.key
            )));
        }
        Ok(())
    }
}

fn object_size(object: &OwnedFd) -> Option<u64> {
    fstat(object).ok().and_then(|st| u64::try_from(st.st_size).ok())
}

/// Tries the names the client's object may have (see `shm_name`); the error names them all.
fn open_object(key: &str) -> Result<OwnedFd> {
    let platform = Platform::current();
    let names = candidates(key, platform);
    let mut tried = Vec::new();
    for name in &names {
        match shm_open(name.as_str(), OFlag::O_RDWR, Mode::S_IRUSR | Mode::S_IWUSR) {
            Ok(fd) => return Ok(fd),
            Err(e) => tried.push(format!("'{name}' ({})", e.desc())),
        }
    }
    let detail = if tried.is_empty() {
        format!("no name to try: macOS takes shared memory names of at most {MACOS_NAME_MAX} characters")
    } else {
        format!("tried {}", tried.join(", "))
    };
    Err(Error::internal(format!("Unable to open shared memory region: '{key}' ({detail})")))
}

pub(super) fn page_size() -> usize {
    // SAFETY: a plain query.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.try_into().unwrap_or(4096)
}

/// The pages holding `length` bytes from `offset` of an object, mapped shared.
struct Mapping {
    start: NonNull<c_void>,
    len: usize,
    /// Where the region's first byte lies, inside the first page.
    data: *mut u8,
}

// SAFETY: the mapping is plain memory that stays valid until dropped; what other processes
// write into it is, as for every shared memory user, the protocol's business.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(object: &OwnedFd, offset: usize, length: NonZeroUsize) -> nix::Result<Mapping> {
        let skip = offset % page_size();
        let len = length.get().checked_add(skip).and_then(NonZeroUsize::new).ok_or(Errno::EOVERFLOW)?;
        let page_offset = libc::off_t::try_from(offset - skip).map_err(|_| Errno::EOVERFLOW)?;
        let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: a new mapping of an object whose size covers it (checked by the caller).
        let start = unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, object, page_offset) }?;
        // SAFETY: `skip` < `len`, inside the mapping.
        let data = unsafe { start.as_ptr().cast::<u8>().add(skip) };
        Ok(Mapping { start, len: len.get(), data })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps what `new` mapped; nothing refers to it any more.
        if let Err(e) = unsafe { munmap(self.start, self.len) } {
            log::warn!("unable to unmap a shared memory region: {e}");
        }
    }
}
