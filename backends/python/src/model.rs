//! A loaded Python model: what every stub of it needs to start, and its instances.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nereid_core::backend::{BackendInstance, BackendModel, InstanceSpec, ModelLocation};
use nereid_core::server::ServerLink;
use nereid_core::{model_config, Result};
use nereid_proto::inference::ModelConfig;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::execution_env::Interpreter;
use crate::instance::{Instance, Supervisor};
use crate::Settings;

/// How long `is_ready()` may take before the model counts as not ready (Triton's five seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct ModelContext {
    pub name: String,
    pub version: i64,
    pub model_dir: PathBuf,
    pub version_dir: PathBuf,
    /// The model file in the version folder (`default_model_filename`, model.py by default).
    pub file: String,
    pub config_json: String,
    /// Every output of the config, for requests that name none.
    pub outputs: Vec<String>,
    pub decoupled: bool,
    pub interpreter: Interpreter,
    pub settings: Settings,
    pub server: ServerLink,
    pub stub_script: PathBuf,
}

impl ModelContext {
    pub fn new(
        location: &ModelLocation,
        config: &ModelConfig,
        settings: Settings,
        server: ServerLink,
        stub_script: PathBuf,
    ) -> Result<ModelContext> {
        let file = match config.default_model_filename.as_str() {
            "" => "model.py".to_string(),
            name => name.to_string(),
        };
        Ok(ModelContext {
            name: location.name.clone(),
            version: location.version,
            model_dir: location.model_dir.clone(),
            version_dir: location.version_dir.clone(),
            file,
            config_json: model_config::to_json(config).to_string(),
            outputs: config.output.iter().map(|o| o.name.clone()).collect(),
            decoupled: config.model_transaction_policy.is_some_and(|p| p.decoupled),
            interpreter: crate::execution_env::interpreter(config, &location.model_dir)?,
            settings,
            server,
            stub_script,
        })
    }

    /// Where the stub finds the model.
    pub fn model_message(&self) -> Value {
        json!({
            "name": self.name,
            "model_dir": self.model_dir,
            "version_dir": self.version_dir,
            "file": self.file,
            "decoupled": self.decoupled,
        })
    }

    /// `initialize(args)`: Triton's seven string keys.
    pub fn initialize_args(&self, instance: &InstanceSpec) -> Value {
        json!({
            "model_config": self.config_json,
            "model_instance_kind": instance.kind.as_str().trim_start_matches("KIND_"),
            "model_instance_name": instance.name,
            "model_instance_device_id": instance.device_id.to_string(),
            "model_repository": self.model_dir,
            "model_version": self.version.to_string(),
            "model_name": self.name,
        })
    }
}

pub struct PythonModel {
    context: Arc<ModelContext>,
    instances: Mutex<Vec<Arc<Supervisor>>>,
}

impl PythonModel {
    pub fn new(context: ModelContext) -> PythonModel {
        PythonModel { context: Arc::new(context), instances: Mutex::new(Vec::new()) }
    }
}

impl BackendModel for PythonModel {
    fn create_instance(&self, spec: &InstanceSpec) -> Result<Box<dyn BackendInstance>> {
        let supervisor = Supervisor::start(self.context.clone(), spec.clone())?;
        self.instances.lock().push(supervisor.clone());
        Ok(Box::new(Instance(supervisor)))
    }

    fn is_ready(&self) -> bool {
        let instances = self.instances.lock().clone();
        instances.iter().all(|instance| instance.is_ready(READY_TIMEOUT))
    }

    fn unload(&self) {
        let instances = std::mem::take(&mut *self.instances.lock());
        std::thread::scope(|s| {
            for instance in &instances {
                s.spawn(|| instance.close());
            }
        });
    }
}
