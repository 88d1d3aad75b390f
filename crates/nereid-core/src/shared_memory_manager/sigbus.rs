//! Survives clients that shrink a shared memory object the server has mapped.
//!
//! Touching a mapped page that lies past the end of its object raises SIGBUS, which kills the
//! process by default. A size check before each access cannot close the gap: the client may
//! truncate right after the check, while a backend reads the input in place. So, as Wayland
//! compositors do for client buffers, a SIGBUS handler looks the faulting address up among the
//! mappings registered here; for one of them it maps private zero pages over the whole mapping
//! and marks it broken. The faulting access then completes on zeros, and the request that used
//! the mapping fails with an error once the manager sees the mark. Faults elsewhere go to the
//! handler that was there before (Rust's stack overflow report, or the default crash).

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// How many mappings can be watched at once (registered regions, plus unregistered ones that
/// requests still use).
const SLOTS: usize = 4096;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    broken: AtomicBool,
}

static TABLE: [Slot; SLOTS] =
    [const { Slot { start: AtomicUsize::new(0), len: AtomicUsize::new(0), broken: AtomicBool::new(false) } };
        SLOTS];

/// The handler found before ours, for faults that are not ours; set once, before ours is installed.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A watched mapping; dropping it stops the watch (before the mapping is unmapped).
pub(super) struct Watch(usize);

impl Watch {
    /// Whether a fault replaced the mapping with zero pages.
    pub fn is_broken(&self) -> bool {
        TABLE[self.0].broken.load(Ordering::Acquire)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let slot = &TABLE[self.0];
        slot.start.store(0, Ordering::Release);
        slot.broken.store(false, Ordering::Release);
        slot.len.store(0, Ordering::Release);
    }
}

/// Watches `len` mapped bytes at `start` (page-aligned, the whole mapping).
pub(super) fn watch(start: *mut u8, len: usize) -> Result<Watch> {
    install()?;
    for (index, slot) in TABLE.iter().enumerate() {
        // `len` marks a slot taken; `start` is published last, so the handler never sees half a slot.
        if slot.len.compare_exchange(0, len, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            slot.start.store(start as usize, Ordering::Release);
            return Ok(Watch(index));
        }
    }
    Err(Error::internal(format!("more than {SLOTS} shared memory mappings are in use")))
}

fn install() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            // SAFETY: plain sigaction calls; the handler only does async-signal-safe work.
            unsafe {
                let mut previous: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
                    return Err(std::io::Error::last_os_error().to_string());
                }
                let _ = PREVIOUS.set(previous);
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_sigbus as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error().to_string());
                }
            }
            Ok(())
        })
        .clone()
        .map_err(|e| Error::internal(format!("unable to install the SIGBUS handler: {e}")))
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let address = unsafe { (*info).si_addr() } as usize;
    for slot in &TABLE {
        let start = slot.start.load(Ordering::Acquire);
        let len = slot.len.load(Ordering::Acquire);
        if start != 0 && address.wrapping_sub(start) < len {
            // SAFETY: replaces our own mapping, same range, with private anonymous memory (a bare
            // syscall, no locks: safe here in practice, as in every Wayland compositor).
            let mapped = unsafe {
                libc::mmap(
                    start as *mut c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if mapped != libc::MAP_FAILED {
                slot.broken.store(true, Ordering::Release);
                return;
            }
        }
    }
    forward(signal, info, context);
}

/// Hands a fault that is not ours to the previous handler; with none, restores the default so
/// the faulting instruction, run again on return, ends the process as it would have.
fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let previous = PREVIOUS.get();
    let handler = previous.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    // SAFETY: calls the handler installed before ours the way it asked to be called.
    unsafe {
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
            libc::signal(signal, libc::SIG_DFL);
        } else if previous.is_some_and(|p| p.sa_flags & libc::SA_SIGINFO != 0) {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                std::mem::transmute(handler);
            f(signal, info, context);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn a_truncated_file_reads_as_zeros_and_marks_the_mapping_broken() {
        let page = super::super::system::page_size();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&vec![7u8; 2 * page]).unwrap();
        let len = std::num::NonZeroUsize::new(2 * page).unwrap();
        let prot = nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE;
        let flags = nix::sys::mman::MapFlags::MAP_SHARED;
        // SAFETY: a fresh mapping of a file we own, unmapped at the end of the test.
        let ptr = unsafe { nix::sys::mman::mmap(None, len, prot, flags, file.as_fd(), 0) }.unwrap();
        let base = ptr.as_ptr().cast::<u8>();
        let watch = watch(base, 2 * page).unwrap();
        // SAFETY: reads inside the mapping; the second one lies past the end after truncation.
        unsafe {
            assert_eq!(std::ptr::read_volatile(base.add(page)), 7);
            file.set_len(0).unwrap();
            assert_eq!(std::ptr::read_volatile(base.add(page)), 0);
        }
        assert!(watch.is_broken());
        drop(watch);
        // SAFETY: the mapping made above.
        unsafe { nix::sys::mman::munmap(ptr, 2 * page) }.unwrap();
    }
}
