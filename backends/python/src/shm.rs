//! POSIX shared memory segments: tensors cross between the server and its stubs through them,
//! never through the sockets.
//!
//! Each side creates the segments it writes into and announces them; the other side maps them,
//! and the creator then removes the name, so no name outlives the exchange.

use std::ffi::CString;
use std::io;
use std::ptr::NonNull;

/// A segment's name: `/nereid.<pid of its creator>.<counter>`, within macOS's 31 characters.
pub fn segment_name(pid: u32, counter: u64) -> String {
    format!("/nereid.{pid}.{counter}")
}

/// A mapped segment (read and write: models may change their inputs in place).
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
}

// The mapping is plain memory; who may touch which block is the protocol's business.
unsafe impl Send for Segment {}
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates a new segment of `len` bytes; fails with `AlreadyExists` if the name is taken.
    pub fn create(name: &str, len: usize) -> io::Result<Segment> {
        Self::map(name, len, true)
    }

    /// Maps a segment the other side created.
    pub fn open(name: &str, len: usize) -> io::Result<Segment> {
        Self::map(name, len, false)
    }

    pub fn unlink(name: &str) {
        if let Ok(cname) = CString::new(name) {
            // SAFETY: a valid C string; a missing name is not an error worth reporting.
            unsafe { libc::shm_unlink(cname.as_ptr()) };
        }
    }

    fn map(name: &str, len: usize, create: bool) -> io::Result<Segment> {
        let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let flags = libc::O_RDWR | if create { libc::O_CREAT | libc::O_EXCL } else { 0 };
        // SAFETY: plain libc calls on a valid C string; every failure is checked.
        unsafe {
            let fd = libc::shm_open(cname.as_ptr(), flags, 0o600 as libc::c_uint);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let sized = !create || libc::ftruncate(fd, len as libc::off_t) == 0;
            let ptr = if sized {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            } else {
                libc::MAP_FAILED
            };
            let error = io::Error::last_os_error();
            libc::close(fd);
            if ptr == libc::MAP_FAILED {
                if create {
                    libc::shm_unlink(cname.as_ptr());
                }
                return Err(error);
            }
            Ok(Segment { ptr: NonNull::new_unchecked(ptr.cast()), len })
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The bytes at `offset..offset + len`.
    ///
    /// # Safety
    /// Nobody may write that range while the slice lives (the block belongs to the reader).
    pub unsafe fn slice(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len), "block outside its segment");
        std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len)
    }

    /// Copies `data` to `offset`.
    ///
    /// # Safety
    /// The range must belong to the caller's block, which nobody else reads or writes yet.
    pub unsafe fn write(&self, offset: usize, data: &[u8]) {
        assert!(offset.checked_add(data.len()).is_some_and(|end| end <= self.len), "block outside its segment");
        std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len());
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_macos_limit() {
        // PSHMNAMLEN is 31 on macOS; pids stay below 2^22 on Linux and 99999 on macOS.
        assert!(segment_name(4_194_304, 99_999_999_999_999).len() <= 31);
        assert_eq!(segment_name(12, 3), "/nereid.12.3");
    }

    #[test]
    fn a_segment_is_shared_through_its_name() {
        let name = segment_name(std::process::id(), 1_000_000 + u64::from(std::process::id() % 1000));
        let writer = Segment::create(&name, 4096).unwrap();
        assert_eq!(Segment::create(&name, 4096).err().map(|e| e.kind()), Some(io::ErrorKind::AlreadyExists));
        let reader = Segment::open(&name, 4096).unwrap();
        Segment::unlink(&name);
        assert!(Segment::open(&name, 4096).is_err());
        unsafe {
            writer.write(100, b"tensor");
            assert_eq!(reader.slice(100, 6), b"tensor");
        }
    }
}
