//! The GPUs that instance groups can be placed on, found without linking any GPU library.
//!
//! Linux: the NVIDIA device nodes (`/dev/nvidia0`, ...) this process sees, limited by
//! `CUDA_VISIBLE_DEVICES` as CUDA limits them. macOS: the one Apple GPU, device 0, which
//! backends reach through Metal or CoreML.

use std::path::Path;

/// The number of GPUs `KIND_GPU` groups may use (`gpus` ids `0..count`).
pub fn gpu_count() -> usize {
    if cfg!(target_os = "macos") {
        return 1;
    }
    let nodes: Vec<String> = std::fs::read_dir(Path::new("/dev"))
        .map(|entries| entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    nvidia_gpus(&nodes, visible.as_deref())
}

/// Whether `KIND_AUTO` may pick a GPU (when its backend can use one). Not Apple's: CoreML may
/// compute in reduced precision, so a config that does not ask for the GPU keeps CPU results.
pub fn auto_uses_gpu() -> bool {
    !cfg!(target_os = "macos")
}

/// GPUs from the names in /dev (`nvidia0`, `nvidiactl`, ...) and `CUDA_VISIBLE_DEVICES`, whose
/// list CUDA reads up to the first invalid entry (`-1` hides every device).
fn nvidia_gpus(dev_names: &[String], visible: Option<&str>) -> usize {
    let devices = dev_names
        .iter()
        .filter(|n| {
            n.strip_prefix("nvidia")
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    match visible {
        None => devices,
        Some(list) => {
            let listed =
                list.split(',').map(str::trim).take_while(|e| !e.is_empty() && !e.starts_with('-')).count();
            listed.min(devices)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nvidia_device_nodes_are_counted() {
        let dev = names(&["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-caps", "null", "nvme0"]);
        assert_eq!(nvidia_gpus(&dev, None), 2);
        assert_eq!(nvidia_gpus(&names(&["null", "tty"]), None), 0);
    }

    #[test]
    fn cuda_visible_devices_limits_them() {
        let dev = names(&["nvidia0", "nvidia1", "nvidia2"]);
        assert_eq!(nvidia_gpus(&dev, Some("1")), 1);
        assert_eq!(nvidia_gpus(&dev, Some("0,2")), 2);
        assert_eq!(nvidia_gpus(&dev, Some("GPU-8f6d,1")), 2);
        assert_eq!(nvidia_gpus(&dev, Some("0,-1,2")), 1);
        assert_eq!(nvidia_gpus(&dev, Some("-1")), 0);
        assert_eq!(nvidia_gpus(&dev, Some("")), 0);
        assert_eq!(nvidia_gpus(&dev, Some("0,1,2,3,4")), 3);
    }
}
