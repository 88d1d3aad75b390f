//! The `python` backend: Triton's Python models (`model.py` with `class TritonPythonModel`),
//! each instance in a stub process of its own.
//!
//! The stub is plain Python (`stub/`, embedded here and written out at first use) that the
//! chosen interpreter runs itself, so any Python 3.8+ with numpy works, on macOS as on Linux,
//! with no libpython and no library paths. The server and a stub talk over two Unix sockets;
//! tensors cross through shared memory.

mod arena;
mod bls;
mod channel;
mod conda_pack;
mod custom_metrics;
mod execution_env;
mod instance;
mod model;
mod services;
mod shm;
mod stub;
mod tensors;
mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nereid_core::backend::{Backend, BackendModel, ModelLocation};
use nereid_core::server::ServerLink;
use nereid_core::{model_config, Error, Result};
use nereid_proto::inference::ModelConfig;
use parking_lot::Mutex;
use serde_json::json;

use crate::model::{ModelContext, PythonModel};
use crate::stub::Stub;

/// The stub's files, as the interpreter imports them.
const STUB_FILES: [(&str, &str); 3] = [
    ("nereid_stub.py", include_str!("../stub/nereid_stub.py")),
    ("nereid_ipc.py", include_str!("../stub/nereid_ipc.py")),
    ("triton_python_backend_utils.py", include_str!("../stub/triton_python_backend_utils.py")),
];

/// `--backend-config=python,<key>=<value>` settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// `stub-timeout-seconds` (Triton's, 30 by default): how long finalize and the stub's
    /// answers to the server's side requests may take.
    pub stub_timeout: Duration,
    /// `execute-timeout-seconds` (none by default): a stub whose `execute` takes longer is
    /// killed, failing that execution, and started again.
    pub execute_timeout: Option<Duration>,
}

impl Settings {
    pub fn parse(config: &BTreeMap<String, String>) -> Result<Settings> {
        let seconds = |key: &str| -> Result<Option<Duration>> {
            let Some(value) = config.get(key) else { return Ok(None) };
            match value.trim().parse::<f64>() {
                Ok(s) if s >= 0.0 && s.is_finite() => Ok((s > 0.0).then(|| Duration::from_secs_f64(s))),
                _ => Err(Error::invalid_arg(format!("invalid value '{value}' for backend config {key}"))),
            }
        };
        Ok(Settings {
            stub_timeout: seconds("stub-timeout-seconds")?.unwrap_or(Duration::from_secs(30)),
            execute_timeout: seconds("execute-timeout-seconds")?,
        })
    }
}

#[derive(Default)]
pub struct PythonBackend {
    server: Mutex<ServerLink>,
    /// The stub's files, written out at the first load and removed with the backend.
    stub_dir: OnceLock<tempfile::TempDir>,
}

pub fn backend() -> Arc<dyn Backend> {
    Arc::new(PythonBackend::default())
}

impl PythonBackend {
    fn stub_script(&self) -> Result<PathBuf> {
        if self.stub_dir.get().is_none() {
            let dir = tempfile::Builder::new()
                .prefix("nereid-python-stub-")
                .tempdir()
                .map_err(|e| Error::internal(format!("failed to write the Python stub: {e}")))?;
            for (name, text) in STUB_FILES {
                std::fs::write(dir.path().join(name), text)
                    .map_err(|e| Error::internal(format!("failed to write the Python stub: {e}")))?;
            }
            let _ = self.stub_dir.set(dir);
        }
        Ok(self.stub_dir.get().expect("set above").path().join(STUB_FILES[0].0))
    }

    fn context(&self, location: &ModelLocation, config: &ModelConfig) -> Result<ModelContext> {
        let settings = Settings::parse(&location.backend_config)?;
        ModelContext::new(location, config, settings, self.server.lock().clone(), self.stub_script()?)
    }
}

impl Backend for PythonBackend {
    fn name(&self) -> &'static str {
        "python"
    }

    fn set_server(&self, server: ServerLink) {
        *self.server.lock() = server;
    }

    /// Runs the model's `auto_complete_config` in a stub of its own, which exits after.
    fn auto_complete_config(&self, location: &ModelLocation, config: &mut ModelConfig) -> Result<()> {
        let context = Arc::new(self.context(location, config)?);
        // Most models have no auto_complete_config: spare them a stub start.
        let source = std::fs::read_to_string(location.version_dir.join(&context.file)).unwrap_or_default();
        if !source.contains("auto_complete_config") {
            return Ok(());
        }
        let stub = Stub::launch(&context, &location.name, services::serve, Box::new(|_| {}))?;
        let message = json!({"op": "auto_complete", "model": context.model_message(), "config": context.config_json});
        let reply = stub.request(&message, None).and_then(instance::reply_error);
        stub.finalize(context.settings.stub_timeout);
        let reply = reply.map_err(|e| {
            Error::internal(format!("auto-complete of model '{}' failed: {}", location.name, e.message))
        })?;
        let text = reply["config"].as_str().unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::internal(format!("auto_complete_config returned invalid JSON: {e}")))?;
        let mut completed = model_config::from_json(&value)?;
        model_config::fill_defaults(&mut completed, &location.name);
        *config = completed;
        Ok(())
    }

    fn load_model(&self, location: &ModelLocation, config: &ModelConfig) -> Result<Arc<dyn BackendModel>> {
        Ok(Arc::new(PythonModel::new(self.context(location, config)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_backend_config() {
        let parse = |pairs: &[(&str, &str)]| {
            Settings::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        assert_eq!(
            parse(&[]).unwrap(),
            Settings { stub_timeout: Duration::from_secs(30), execute_timeout: None }
        );
        let set = parse(&[("stub-timeout-seconds", "5"), ("execute-timeout-seconds", "0.5")]).unwrap();
        assert_eq!(set.execute_timeout, Some(Duration::from_millis(500)));
        assert_eq!(set.stub_timeout, Duration::from_secs(5));
        assert_eq!(parse(&[("execute-timeout-seconds", "0")]).unwrap().execute_timeout, None);
        assert!(parse(&[("stub-timeout-seconds", "-1")]).is_err());
    }
}
