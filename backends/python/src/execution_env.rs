//! Which Python runs a model's stubs: `python3` from PATH, or the environment named by the
//! model's `EXECUTION_ENV_PATH` parameter (a venv or conda folder, or a conda-pack archive
//! unpacked once into a cache). The interpreter runs the stub script itself: no libpython, no
//! library paths to set.
//!
//! Where interpreters and caches live differs by platform; those rules are plain functions,
//! tested on every platform.

use std::path::{Path, PathBuf};

use nereid_core::{Error, Result};
use nereid_proto::inference::ModelConfig;

const MODEL_DIRECTORY: &str = "$$TRITON_MODEL_DIRECTORY";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Linux,
    MacOs,
    Windows,
}

impl Platform {
    pub fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::MacOs
        } else if cfg!(windows) {
            Platform::Windows
        } else {
            Platform::Linux
        }
    }
}

/// How to start a stub's interpreter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    pub program: PathBuf,
    /// The environment's scripts folder, put first on PATH as activating it would.
    pub bin_dir: Option<PathBuf>,
}

/// The interpreter for a model whose folder is `model_dir`.
pub fn interpreter(config: &ModelConfig, model_dir: &Path) -> Result<Interpreter> {
    let Some(value) = config.parameters.get("EXECUTION_ENV_PATH").map(|p| p.string_value.as_str()) else {
        return Ok(Interpreter { program: PathBuf::from("python3"), bin_dir: None });
    };
    let path = PathBuf::from(value.replace(MODEL_DIRECTORY, &model_dir.to_string_lossy()));
    let env = if is_archive(&path) {
        let cache = cache_root(Platform::current(), |k| std::env::var_os(k).map(PathBuf::from)).ok_or_else(|| {
            Error::invalid_arg("no cache folder to unpack EXECUTION_ENV_PATH into (set HOME or XDG_CACHE_HOME)")
        })?;
        crate::conda_pack::unpack(&path, &cache.join("nereid").join("python-envs"))?
    } else {
        path
    };
    let program = interpreter_candidates(Platform::current())
        .iter()
        .map(|candidate| env.join(candidate))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            Error::invalid_arg(format!(
                "EXECUTION_ENV_PATH '{}' holds no Python interpreter (looked for {})",
                env.display(),
                interpreter_candidates(Platform::current()).join(", ")
            ))
        })?;
    let bin_dir = program.parent().map(Path::to_path_buf);
    Ok(Interpreter { program, bin_dir })
}

/// conda-pack writes `.tar.gz` archives.
pub fn is_archive(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Where an environment folder keeps its interpreter, best first: venvs and conda use
/// `bin/python3` on Unix; a macOS framework (`Python.framework`) has it under its current
/// version; Windows venvs use `Scripts\python.exe` and conda `python.exe` at the top.
pub fn interpreter_candidates(os: Platform) -> &'static [&'static str] {
    match os {
        Platform::Linux => &["bin/python3", "bin/python"],
        Platform::MacOs => &["bin/python3", "bin/python", "Versions/Current/bin/python3"],
        Platform::Windows => &["python.exe", "Scripts/python.exe"],
    }
}

/// The user's cache folder: `~/Library/Caches` on macOS, `$XDG_CACHE_HOME` or `~/.cache`
/// elsewhere on Unix, `%LOCALAPPDATA%` on Windows.
pub fn cache_root(os: Platform, var: impl Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
    let non_empty = |k: &str| var(k).filter(|p| !p.as_os_str().is_empty());
    match os {
        Platform::MacOs => non_empty("HOME").map(|home| home.join("Library/Caches")),
        Platform::Linux => non_empty("XDG_CACHE_HOME").or_else(|| non_empty("HOME").map(|home| home.join(".cache"))),
        Platform::Windows => non_empty("LOCALAPPDATA"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nereid_proto::inference::ModelParameter;

    fn with_env_path(value: &str) -> ModelConfig {
        let mut config = ModelConfig::default();
        config.parameters.insert("EXECUTION_ENV_PATH".into(), ModelParameter { string_value: value.into() });
        config
    }

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }

    #[test]
    fn python3_from_path_by_default() {
        let found = interpreter(&ModelConfig::default(), Path::new("/m")).unwrap();
        assert_eq!(found, Interpreter { program: "python3".into(), bin_dir: None });
    }

    #[test]
    fn an_environment_folder_relative_to_the_model() {
        let model = tempfile::tempdir().unwrap();
        let python = model.path().join("env").join(interpreter_candidates(Platform::current())[0]);
        touch(&python);
        let found = interpreter(&with_env_path("$$TRITON_MODEL_DIRECTORY/env"), model.path()).unwrap();
        assert_eq!(found.program, python);
        assert_eq!(found.bin_dir.as_deref(), python.parent());
        let error = interpreter(&with_env_path("$$TRITON_MODEL_DIRECTORY/none"), model.path()).unwrap_err();
        assert!(error.message.contains("holds no Python interpreter"), "{}", error.message);
    }

    #[test]
    fn interpreter_layouts_per_platform() {
        let pick = |os: Platform, files: &[&str]| {
            let env = tempfile::tempdir().unwrap();
            for file in files {
                touch(&env.path().join(file));
            }
            interpreter_candidates(os)
                .iter()
                .find(|c| env.path().join(c).is_file())
                .map(|c| c.to_string())
        };
        assert_eq!(pick(Platform::Linux, &["bin/python", "bin/python3"]).as_deref(), Some("bin/python3"));
        assert_eq!(pick(Platform::Linux, &["bin/python"]).as_deref(), Some("bin/python"));
        assert_eq!(
            pick(Platform::MacOs, &["Versions/Current/bin/python3"]).as_deref(),
            Some("Versions/Current/bin/python3")
        );
        assert_eq!(pick(Platform::Linux, &["Versions/Current/bin/python3"]), None);
        assert_eq!(pick(Platform::Windows, &["Scripts/python.exe"]).as_deref(), Some("Scripts/python.exe"));
        assert_eq!(pick(Platform::Windows, &["python.exe", "Scripts/python.exe"]).as_deref(), Some("python.exe"));
        assert_eq!(pick(Platform::Windows, &["bin/python3"]), None);
    }

    #[test]
    fn cache_folders_per_platform() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| PathBuf::from(v))
        };
        let home = &[("HOME", "/home/u")];
        assert_eq!(cache_root(Platform::MacOs, vars(home)), Some("/home/u/Library/Caches".into()));
        assert_eq!(cache_root(Platform::Linux, vars(home)), Some("/home/u/.cache".into()));
        let xdg = &[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/c")];
        assert_eq!(cache_root(Platform::Linux, vars(xdg)), Some("/c".into()));
        assert_eq!(cache_root(Platform::Windows, vars(&[("LOCALAPPDATA", "C:/L")])), Some("C:/L".into()));
        assert_eq!(cache_root(Platform::Linux, vars(&[("HOME", "")])), None);
    }

    #[test]
    fn archives_by_name() {
        assert!(is_archive(Path::new("/e/py311.tar.gz")));
        assert!(is_archive(Path::new("env.TGZ")));
        assert!(!is_archive(Path::new("/e/py311")));
    }
}
