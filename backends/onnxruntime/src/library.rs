//! Finding and loading the ONNX Runtime shared library. Nothing is linked at build time
//! (`load-dynamic`), so the library is looked for where users have it: named by
//! `ORT_DYLIB_PATH`, beside the binary, or in a Python environment with `onnxruntime` installed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ort::environment::Environment;
use ort::logging::LogLevel;

/// How a platform names the library; the rules are plain so every platform's are tested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Platform {
    Linux,
    MacOs,
}

impl Platform {
    pub(crate) fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::MacOs
        } else {
            Platform::Linux
        }
    }

    /// The version in a library file name (`libonnxruntime.so.1.32.0` on Linux,
    /// `libonnxruntime.1.32.0.dylib` on macOS → `[1, 32, 0]`; unversioned → `[]`), or `None`
    /// when the file is not the library (`libonnxruntime_providers_shared.so` is not).
    fn library_version(self, file_name: &str) -> Option<Vec<u32>> {
        let version = match self {
            Platform::Linux => file_name.strip_prefix("libonnxruntime.so")?,
            Platform::MacOs => file_name.strip_prefix("libonnxruntime")?.strip_suffix(".dylib")?,
        };
        if version.is_empty() {
            return Some(Vec::new());
        }
        version.strip_prefix('.')?.split('.').map(|part| part.parse().ok()).collect()
    }

    fn example_name(self) -> &'static str {
        match self {
            Platform::Linux => "libonnxruntime.so.<version>",
            Platform::MacOs => "libonnxruntime.<version>.dylib",
        }
    }
}

/// Where to look, read from the process once so the search itself is a plain function.
#[derive(Clone, Debug, Default)]
pub(crate) struct SearchPaths {
    /// `ORT_DYLIB_PATH`.
    pub dylib_path: Option<PathBuf>,
    /// The folder of the running binary.
    pub exe_dir: Option<PathBuf>,
    /// `VIRTUAL_ENV`.
    pub virtual_env: Option<PathBuf>,
}

impl SearchPaths {
    fn from_process() -> SearchPaths {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        SearchPaths {
            // A relative ORT_DYLIB_PATH means the working directory, not the binary's folder
            // (where `ort` would otherwise resolve it).
            dylib_path: var("ORT_DYLIB_PATH").map(|p| std::path::absolute(&p).unwrap_or(p)),
            exe_dir: std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)),
            virtual_env: var("VIRTUAL_ENV"),
        }
    }
}

/// Finds the library: `ORT_DYLIB_PATH` as given (an explicit choice that fails loudly rather
/// than falling back); else beside the binary; else in `onnxruntime/capi/` of the project's
/// `.venv` (looked for in the binary's folder and each folder above it); else of `$VIRTUAL_ENV`.
pub(crate) fn find_library(platform: Platform, paths: &SearchPaths) -> Option<PathBuf> {
    if let Some(path) = &paths.dylib_path {
        return Some(path.clone());
    }
    let exe_dir = paths.exe_dir.as_deref();
    exe_dir
        .and_then(|dir| library_in(platform, dir))
        .or_else(|| exe_dir?.ancestors().find_map(|dir| venv_library(platform, &dir.join(".venv"))))
        .or_else(|| venv_library(platform, paths.virtual_env.as_deref()?))
}

/// The newest library file in `dir`.
fn library_in(platform: Platform, dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = platform.library_version(entry.file_name().to_str()?)?;
            Some((version, entry.path()))
        })
        .max()
        .map(|(_, path)| path)
}

/// The library of the `onnxruntime` package in `<venv>/lib/python3*/site-packages`.
fn venv_library(platform: Platform, venv: &Path) -> Option<PathBuf> {
    let mut pythons: Vec<PathBuf> = fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_str().is_some_and(|name| name.starts_with("python3")))
        .map(|entry| entry.path())
        .collect();
    pythons.sort();
    pythons.iter().find_map(|python| library_in(platform, &python.join("site-packages/onnxruntime/capi")))
}

fn not_found_message(platform: Platform) -> String {
    format!(
        "ONNX Runtime library not found: set ORT_DYLIB_PATH to the path of {}, or `pip install \
         onnxruntime` into the project's .venv (beside or above the nereid binary) or into the \
         active virtual environment",
        platform.example_name()
    )
}

/// The process's ONNX Runtime environment, created on first use. A failure is not remembered,
/// so installing the library and loading the model again works without a restart.
pub fn environment() -> Result<Environment, String> {
    static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);
    let mut slot = ENVIRONMENT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(env) = slot.as_ref() {
        // The server's log settings may have changed since (`/v2/logging`).
        env.set_log_level(log_level());
        return Ok(env.clone());
    }
    let platform = Platform::current();
    let path =
        find_library(platform, &SearchPaths::from_process()).ok_or_else(|| not_found_message(platform))?;
    let env = ort::init_from(&path)
        .map_err(|e| format!("unable to load ONNX Runtime: {e}"))?
        .with_name("nereid")
        .with_logger(Arc::new(forward_log))
        .build()
        .map_err(|e| format!("unable to start ONNX Runtime from '{}': {e}", path.display()))?;
    env.set_log_level(log_level());
    log::info!("ONNX Runtime loaded from '{}'", path.display());
    *slot = Some(env.clone());
    Ok(env)
}

/// ONNX Runtime's own messages go to the server's log: its warnings and errors always, its
/// info with `--log-verbose=1`, its verbose messages (node placements among them) with 2.
fn forward_log(level: LogLevel, _category: &str, _id: &str, location: &str, message: &str) {
    let level = match level {
        LogLevel::Verbose => log::Level::Trace,
        LogLevel::Info => log::Level::Debug,
        LogLevel::Warning => log::Level::Warn,
        LogLevel::Error | LogLevel::Fatal => log::Level::Error,
    };
    log::log!(target: "onnxruntime", level, "ONNX Runtime ({location}): {message}");
}

/// The least severe level the server's log shows, so ONNX Runtime formats nothing it drops.
fn log_level() -> LogLevel {
    if log::log_enabled!(target: "onnxruntime", log::Level::Trace) {
        LogLevel::Verbose
    } else if log::log_enabled!(target: "onnxruntime", log::Level::Debug) {
        LogLevel::Info
    } else {
        LogLevel::Warning
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"").unwrap();
    }

    #[test]
    fn library_names_per_platform() {
        use Platform::*;
        assert_eq!(Linux.library_version("libonnxruntime.so.1.32.0"), Some(vec![1, 32, 0]));
        assert_eq!(Linux.library_version("libonnxruntime.so"), Some(vec![]));
        assert_eq!(Linux.library_version("libonnxruntime_providers_shared.so"), None);
        assert_eq!(Linux.library_version("libonnxruntime.so.1.x"), None);
        assert_eq!(Linux.library_version("libonnxruntime.1.32.0.dylib"), None);
        assert_eq!(MacOs.library_version("libonnxruntime.1.32.0.dylib"), Some(vec![1, 32, 0]));
        assert_eq!(MacOs.library_version("libonnxruntime.dylib"), Some(vec![]));
        assert_eq!(MacOs.library_version("libonnxruntime_providers_shared.dylib"), None);
        assert_eq!(MacOs.library_version("libonnxruntime.so.1.32.0"), None);
    }

    #[test]
    fn dylib_path_wins_even_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("bin/libonnxruntime.so.1.32.0"));
        let paths = SearchPaths {
            dylib_path: Some(PathBuf::from("/nowhere/libonnxruntime.so")),
            exe_dir: Some(dir.path().join("bin")),
            virtual_env: None,
        };
        assert_eq!(find_library(Platform::Linux, &paths), paths.dylib_path);
    }

    #[test]
    fn beside_binary_picks_newest() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        for name in
            ["libonnxruntime.so.1.9.0", "libonnxruntime.so.1.32.0", "libonnxruntime_providers_shared.so"]
        {
            touch(&bin.join(name));
        }
        let paths = SearchPaths { exe_dir: Some(bin.clone()), ..Default::default() };
        assert_eq!(find_library(Platform::Linux, &paths), Some(bin.join("libonnxruntime.so.1.32.0")));
        assert_eq!(find_library(Platform::MacOs, &paths), None);
    }

    #[test]
    fn project_venv_above_binary_then_virtual_env() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("project/target/release");
        fs::create_dir_all(&bin).unwrap();
        let capi = "lib/python3.11/site-packages/onnxruntime/capi";
        let active = dir.path().join("active");
        touch(&active.join(capi).join("libonnxruntime.1.30.0.dylib"));
        let paths =
            SearchPaths { exe_dir: Some(bin), virtual_env: Some(active.clone()), ..Default::default() };
        assert_eq!(
            find_library(Platform::MacOs, &paths),
            Some(active.join(capi).join("libonnxruntime.1.30.0.dylib"))
        );

        let project = dir.path().join("project/.venv").join(capi).join("libonnxruntime.1.32.0.dylib");
        touch(&project);
        assert_eq!(find_library(Platform::MacOs, &paths), Some(project));
        assert_eq!(find_library(Platform::Linux, &paths), None);
    }

    #[test]
    fn not_found_says_how_to_fix() {
        let message = not_found_message(Platform::MacOs);
        assert!(message.contains("ORT_DYLIB_PATH") && message.contains("pip install onnxruntime"));
        assert!(message.contains("libonnxruntime.<version>.dylib"));
    }
}
