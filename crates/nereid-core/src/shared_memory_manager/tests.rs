use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::Mode;

use super::*;
use crate::error::Code;
use crate::tensor::{DataType, Tensor};

/// A POSIX shared memory object filled with 0, 1, 2, ..., unlinked when dropped.
struct Object {
    key: String,
    fd: OwnedFd,
}

impl Object {
    fn new(tag: &str, size: usize) -> Object {
        let key = format!("/nereid_test_{}_{tag}", std::process::id());
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR;
        let fd = shm_open(key.as_str(), flags, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
        let mut file = std::fs::File::from(fd.try_clone().unwrap());
        use std::io::Write;
        file.write_all(&(0..size).map(|i| i as u8).collect::<Vec<_>>()).unwrap();
        Object { key, fd }
    }

    fn truncate(&self, size: u64) {
        nix::unistd::ftruncate(&self.fd, size as i64).unwrap();
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let _ = shm_unlink(self.key.as_str());
    }
}

fn manager() -> SharedMemoryManager {
    SharedMemoryManager::new(true)
}

#[test]
fn inputs_read_the_registered_part_in_place() {
    let object = Object::new("input", 64);
    let m = manager();
    m.register_system("r", &object.key, 8, 32).unwrap();
    let mut uses = RequestRegions::default();
    let data = m.input(&mut uses, "r", 4, 8).unwrap();
    assert_eq!(&data[..], &[12, 13, 14, 15, 16, 17, 18, 19]);
    let status = m.system_status("").unwrap();
    assert_eq!(
        status,
        [SystemRegionStatus { name: "r".into(), key: object.key.clone(), offset: 8, byte_size: 32 }]
    );
}

#[test]
fn registration_errors_read_like_tritons() {
    let object = Object::new("register", 16);
    let m = manager();
    let e = m.register_system("r", &object.key, 8, 9).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (Code::InvalidArg, "failed to register shared memory region 'r': invalid args")
    );
    assert_eq!(m.register_system("r", &object.key, u64::MAX, 2).unwrap_err().code, Code::InvalidArg);
    m.register_system("r", &object.key, 0, 16).unwrap();
    let e = m.register_system("r", &object.key, 0, 16).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (Code::AlreadyExists, "shared memory region 'r' already in manager")
    );
    let e = m.register_system("x", "/nereid_no_such_object", 0, 1).unwrap_err();
    assert!(
        e.message.starts_with("Unable to open shared memory region: '/nereid_no_such_object' (tried "),
        "{}",
        e.message
    );
    assert!(m.register_system("x", "//", 0, 1).unwrap_err().message.contains("invalid shm key '//'"));
    let e = m.register_system("x", "/triton_python_backend_shm_region_1", 0, 1).unwrap_err();
    assert!(e.message.contains("contains the reserved prefix"), "{}", e.message);
}

#[test]
fn offsets_and_sizes_are_checked_before_any_access() {
    let object = Object::new("bounds", 16);
    let m = manager();
    m.register_system("r", &object.key, 0, 16).unwrap();
    let mut uses = RequestRegions::default();
    let cases = [
        (16, 0, "Invalid offset for shared memory region: 'r'"),
        (u64::MAX, 1, "Invalid offset for shared memory region: 'r'"),
        (8, 9, "Invalid offset + byte size for shared memory region: 'r'"),
        (
            1,
            u64::MAX,
            "Integer overflow detected: byte_size (18446744073709551615) + offset (1) exceeds maximum value (18446744073709551615) for region 'r'",
        ),
    ];
    for (offset, size, text) in cases {
        let e = m.input(&mut uses, "r", offset, size).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (Code::InvalidArg, text));
        assert_eq!(m.output(&mut uses, "o", "r", offset, size).unwrap_err().message, text);
    }
    let e = m.input(&mut uses, "nope", 0, 1).unwrap_err();
    assert_eq!((e.code, e.message.as_str()), (Code::NotFound, "Unable to find shared memory region: 'nope'"));
}

#[test]
fn outputs_are_written_and_leave_no_data_in_the_response() {
    let object = Object::new("output", 16);
    let m = manager();
    m.register_system("r", &object.key, 0, 16).unwrap();
    let mut uses = RequestRegions::default();
    m.output(&mut uses, "out", "r", 4, 4).unwrap();
    let mut response = InferResponse::default();
    response.outputs.push(Tensor::new("out", DataType::Int32, vec![1], 7i32.to_le_bytes().to_vec()));
    response.outputs.push(Tensor::new("other", DataType::Int32, vec![1], 9i32.to_le_bytes().to_vec()));
    uses.finish(&mut response).unwrap();
    assert!(uses.has_output("out") && !uses.has_output("other"));
    assert!(response.outputs[0].data.is_empty() && response.outputs[1].data.len() == 4);
    assert_eq!(&m.input(&mut RequestRegions::default(), "r", 4, 4).unwrap()[..], 7i32.to_le_bytes());

    let mut small = RequestRegions::default();
    m.output(&mut small, "out", "r", 0, 2).unwrap();
    let mut response = InferResponse::default();
    response.outputs.push(Tensor::new("out", DataType::Int32, vec![1], vec![0; 4]));
    assert_eq!(
        small.finish(&mut response).unwrap_err().message,
        "shared memory size specified with the request for output 'out' (2 bytes) should be at least 4 bytes to hold the results"
    );
}

#[test]
fn unregistered_regions_stay_mapped_while_in_use() {
    let object = Object::new("in_use", 16);
    let m = manager();
    m.register_system("r", &object.key, 0, 16).unwrap();
    let mut uses = RequestRegions::default();
    let data = m.input(&mut uses, "r", 0, 16).unwrap();
    m.unregister(MemoryKind::System, "r").unwrap();
    assert_eq!(m.input(&mut RequestRegions::default(), "r", 0, 1).unwrap_err().code, Code::NotFound);
    assert_eq!(data[15], 15);
    uses.finish(&mut InferResponse::default()).unwrap();
    // The name is free again at once.
    m.register_system("r", &object.key, 0, 8).unwrap();
}

#[test]
fn a_shrunk_object_gives_errors_not_crashes() {
    let page = system::page_size();
    let object = Object::new("shrunk", 2 * page);
    let m = manager();
    m.register_system("r", &object.key, 0, 2 * page as u64).unwrap();
    let mut uses = RequestRegions::default();
    let data = m.input(&mut uses, "r", 0, 2 * page as u64).unwrap();
    object.truncate(0);
    // A backend reading the input now finds zeros instead of crashing the server...
    assert_eq!(data[page + 1], 0);
    // ...and the request, the next ones and writes all fail.
    assert!(uses.finish(&mut InferResponse::default()).unwrap_err().message.contains("was truncated"));
    assert!(m
        .input(&mut RequestRegions::default(), "r", 0, 1)
        .unwrap_err()
        .message
        .contains("no longer usable"));
    m.unregister(MemoryKind::System, "").unwrap();

    let object = Object::new("shrunk_before", 64);
    m.register_system("r", &object.key, 0, 64).unwrap();
    object.truncate(32);
    assert!(m
        .input(&mut RequestRegions::default(), "r", 0, 4)
        .unwrap_err()
        .message
        .contains("was truncated below 64 bytes"));
}

#[test]
fn status_and_unregister_by_kind() {
    let a = Object::new("status_a", 8);
    let m = manager();
    m.register_system("a", &a.key, 0, 8).unwrap();
    m.register_system("b", &a.key, 4, 4).unwrap();
    assert_eq!(m.system_status("b").unwrap()[0].offset, 4);
    assert!(m.cuda_status("").unwrap().is_empty());
    let e = m.system_status("c").unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (Code::NotFound, "Unable to find system shared memory region: 'c'")
    );
    assert_eq!(
        m.cuda_status("a").unwrap_err().message,
        "The region named 'a' is registered as system shared memory, not CUDA shared memory"
    );
    assert_eq!(m.cuda_status("c").unwrap_err().message, "Unable to find cuda shared memory region: 'c'");
    // Unregistering through the other kind, or a name nobody registered, leaves things alone.
    m.unregister(MemoryKind::Cuda, "a").unwrap();
    m.unregister(MemoryKind::System, "nobody").unwrap();
    assert_eq!(m.system_status("").unwrap().len(), 2);
    m.unregister(MemoryKind::System, "a").unwrap();
    assert_eq!(m.system_status("").unwrap().len(), 1);
    m.unregister(MemoryKind::System, "").unwrap();
    assert!(m.system_status("").unwrap().is_empty());
}

#[test]
fn client_regions_need_the_flag() {
    let m = SharedMemoryManager::new(false);
    let text = "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable.";
    for e in [
        m.register_system("r", "/k", 0, 1).unwrap_err(),
        m.register_cuda("r", &[0; 64], 0, 1).unwrap_err(),
        m.unregister(MemoryKind::System, "").unwrap_err(),
    ] {
        assert_eq!((e.code, e.message.as_str()), (Code::Unsupported, text));
    }
    assert!(m.system_status("").unwrap().is_empty());
}

#[test]
fn cuda_handles_are_checked_or_cuda_is_reported_missing() {
    let m = manager();
    let e = m.register_cuda("g", &[0; 10], 0, 16).unwrap_err();
    if m.cuda_available() {
        assert_eq!(e.message, "'raw_handle' must be a valid base64 encoded cudaIpcMemHandle_t");
    } else {
        assert_eq!(e.code, Code::Unsupported);
        assert!(e
            .message
            .starts_with("failed to register CUDA shared memory region: 'g', GPUs not supported"));
    }
}
