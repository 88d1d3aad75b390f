//! CUDA shared memory: device buffers that clients share through CUDA IPC handles.
//!
//! The CUDA runtime is loaded when first needed, so the server builds and runs without CUDA;
//! where it cannot be loaded the extension answers that GPUs are not supported. Backends take
//! host memory, so inputs are copied from the device and outputs back to it.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::path::Path;
use std::sync::Arc;

use libloading::Library;

use super::Platform;
use crate::error::{Error, Result};

/// `sizeof(cudaIpcMemHandle_t)`.
pub const IPC_HANDLE_SIZE: usize = 64;

/// `cudaIpcMemHandle_t`: passed by value.
#[repr(C)]
#[derive(Clone, Copy)]
struct IpcMemHandle([u8; IPC_HANDLE_SIZE]);

const CUDA_IPC_MEM_LAZY_ENABLE_PEER_ACCESS: c_uint = 1;
const CUDA_MEMCPY_HOST_TO_DEVICE: c_int = 1;
const CUDA_MEMCPY_DEVICE_TO_HOST: c_int = 2;

/// The CUDA runtime's file names to load, in order: those the dynamic loader finds on its own
/// (newest major version first), then the toolkit's folder under `cuda_home` and the usual one.
pub fn runtime_library_names(platform: Platform, cuda_home: Option<&str>) -> Vec<String> {
    match platform {
        // NVIDIA has published no CUDA for macOS since 10.2 (2019).
        Platform::MacOs => Vec::new(),
        Platform::Linux => {
            let mut names: Vec<String> =
                ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
                    .map(String::from)
                    .into();
            for home in cuda_home.into_iter().chain(["/usr/local/cuda"]) {
                names.push(Path::new(home).join("lib64").join("libcudart.so").display().to_string());
            }
            names
        }
    }
}

/// The driver library, for the size of an IPC allocation (the runtime does not tell it).
const DRIVER_LIBRARY: &str = "libcuda.so.1";

type SetDevice = unsafe extern "C" fn(c_int) -> c_int;
type IpcOpen = unsafe extern "C" fn(*mut *mut c_void, IpcMemHandle, c_uint) -> c_int;
type IpcClose = unsafe extern "C" fn(*mut c_void) -> c_int;
type Memcpy = unsafe extern "C" fn(*mut c_void, *const c_void, usize, c_int) -> c_int;
type ErrorString = unsafe extern "C" fn(c_int) -> *const c_char;
type AddressRange = unsafe extern "C" fn(*mut u64, *mut usize, u64) -> c_int;

pub(super) struct CudaRuntime {
    set_device: SetDevice,
    ipc_open: IpcOpen,
    ipc_close: IpcClose,
    memcpy: Memcpy,
    error_string: ErrorString,
    address_range: AddressRange,
    // The functions above point into these.
    _runtime: Library,
    _driver: Library,
}

impl CudaRuntime {
    pub fn load() -> std::result::Result<CudaRuntime, String> {
        let cuda_home = std::env::var("CUDA_HOME").ok();
        let names = runtime_library_names(Platform::current(), cuda_home.as_deref());
        if names.is_empty() {
            return Err("CUDA is not available on this platform".into());
        }
        let mut last_error = String::new();
        // SAFETY: loading the CUDA libraries runs only their own initialisers.
        let runtime =
            names.iter().find_map(|n| unsafe { Library::new(n) }.map_err(|e| last_error = reason(&e)).ok());
        let runtime = runtime.ok_or_else(|| {
            format!("unable to load the CUDA runtime (tried {}; last: {last_error})", names.join(", "))
        })?;
        // SAFETY: as above.
        let driver = unsafe { Library::new(DRIVER_LIBRARY) }
            .map_err(|e| format!("unable to load {DRIVER_LIBRARY}: {}", reason(&e)))?;
        // SAFETY: each symbol has the C signature of the CUDA runtime and driver APIs.
        unsafe {
            Ok(CudaRuntime {
                set_device: *symbol(&runtime, "cudaSetDevice")?,
                ipc_open: *symbol(&runtime, "cudaIpcOpenMemHandle")?,
                ipc_close: *symbol(&runtime, "cudaIpcCloseMemHandle")?,
                memcpy: *symbol(&runtime, "cudaMemcpy")?,
                error_string: *symbol(&runtime, "cudaGetErrorString")?,
                address_range: *symbol(&driver, "cuMemGetAddressRange_v2")?,
                _runtime: runtime,
                _driver: driver,
            })
        }
    }

    fn check(&self, code: c_int, call: &str) -> std::result::Result<(), String> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: cudaGetErrorString returns a static string for any code.
        let text = unsafe { CStr::from_ptr((self.error_string)(code)) }.to_string_lossy();
        Err(format!("{call}: {text}"))
    }
}

/// The loader's own words (libloading's error only says which call failed).
fn reason(e: &libloading::Error) -> String {
    std::error::Error::source(e).map_or_else(|| e.to_string(), |s| s.to_string())
}

unsafe fn symbol<'l, T>(
    library: &'l Library,
    name: &str,
) -> std::result::Result<libloading::Symbol<'l, T>, String> {
    unsafe { library.get(name.as_bytes()) }.map_err(|e| format!("CUDA library without {name}: {e}"))
}

/// A client's device buffer, opened from its IPC handle.
pub(super) struct CudaRegion {
    runtime: Arc<CudaRuntime>,
    pub device_id: c_int,
    pub byte_size: usize,
    pointer: usize,
}

impl CudaRegion {
    pub fn open(
        runtime: Arc<CudaRuntime>,
        name: &str,
        handle: [u8; IPC_HANDLE_SIZE],
        device_id: c_int,
        byte_size: usize,
    ) -> Result<CudaRegion> {
        let handle = IpcMemHandle(handle);
        let mut pointer = std::ptr::null_mut();
        // SAFETY: CUDA runtime calls with valid out-pointers.
        let opened = unsafe {
            runtime.check((runtime.set_device)(device_id), "cudaSetDevice").and_then(|()| {
                runtime.check(
                    (runtime.ipc_open)(&mut pointer, handle, CUDA_IPC_MEM_LAZY_ENABLE_PEER_ACCESS),
                    "cudaIpcOpenMemHandle",
                )
            })
        };
        // Like Triton: the details go to the log, the client gets a plain answer.
        if let Err(e) = opened {
            log::error!("failed to open CUDA IPC handle: {e}");
            return Err(Error::invalid_arg("failed to register shared memory region: invalid args"));
        }
        let region = CudaRegion { runtime, device_id, byte_size, pointer: pointer as usize };
        let (mut base, mut size) = (0u64, 0usize);
        // SAFETY: a driver call with valid out-pointers, on the pointer just opened.
        let range = unsafe { (region.runtime.address_range)(&mut base, &mut size, region.pointer as u64) };
        if range != 0 || byte_size > size {
            log::error!("CUDA shared memory region '{name}': {byte_size} bytes asked, {size} allocated (error {range})");
            return Err(Error::invalid_arg(format!(
                "failed to register shared memory region '{name}': invalid args"
            )));
        }
        Ok(region)
    }

    /// Copies `len` bytes at `offset` (checked by the caller) to the host.
    pub fn read(&self, name: &str, offset: usize, len: usize) -> Result<Vec<u8>> {
        let mut host = vec![0u8; len];
        // SAFETY: copies into a host buffer of `len` bytes from inside the opened allocation.
        self.copy(
            name,
            host.as_mut_ptr().cast(),
            (self.pointer + offset) as *const c_void,
            len,
            CUDA_MEMCPY_DEVICE_TO_HOST,
        )?;
        Ok(host)
    }

    /// Copies `data` to `offset` (checked by the caller) on the device.
    pub fn write(&self, name: &str, offset: usize, data: &[u8]) -> Result<()> {
        // SAFETY: copies `data` into the opened allocation, inside its checked size.
        self.copy(
            name,
            (self.pointer + offset) as *mut c_void,
            data.as_ptr().cast(),
            data.len(),
            CUDA_MEMCPY_HOST_TO_DEVICE,
        )
    }

    fn copy(&self, name: &str, dst: *mut c_void, src: *const c_void, len: usize, kind: c_int) -> Result<()> {
        let r = &self.runtime;
        // SAFETY: the callers pass ranges inside their buffers.
        unsafe {
            r.check((r.set_device)(self.device_id), "cudaSetDevice")
                .and_then(|()| r.check((r.memcpy)(dst, src, len, kind), "cudaMemcpy"))
        }
        .map_err(|e| Error::internal(format!("failed to copy CUDA shared memory region '{name}': {e}")))
    }
}

impl Drop for CudaRegion {
    fn drop(&mut self) {
        let r = &self.runtime;
        // SAFETY: closes the handle opened in `open`; nothing uses the pointer any more.
        if let Err(e) =
            r.check(unsafe { (r.ipc_close)(self.pointer as *mut c_void) }, "cudaIpcCloseMemHandle")
        {
            log::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_tries_the_loader_then_the_toolkit_folders() {
        let names = runtime_library_names(Platform::Linux, Some("/opt/cuda"));
        assert_eq!(names[0], "libcudart.so");
        assert!(names.contains(&"libcudart.so.12".to_string()));
        assert_eq!(
            &names[names.len() - 2..],
            ["/opt/cuda/lib64/libcudart.so", "/usr/local/cuda/lib64/libcudart.so"]
        );
        assert_eq!(
            runtime_library_names(Platform::Linux, None).last().unwrap(),
            "/usr/local/cuda/lib64/libcudart.so"
        );
    }

    #[test]
    fn macos_has_no_cuda() {
        assert!(runtime_library_names(Platform::MacOs, None).is_empty());
    }
}
