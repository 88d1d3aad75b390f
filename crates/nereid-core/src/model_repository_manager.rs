//! The model repository manager: finds models in the repositories, loads and unloads their
//! versions through the backends, tracks Triton's per-version states, and polls for changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use nereid_proto::inference::{model_version_policy, ModelConfig};
use parking_lot::{Mutex, RwLock};

use crate::backend::{Backend, ModelLocation};
use crate::devices;
use crate::ensemble_scheduler::{self, ModelLookup};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::model_config;
use crate::server::ServerLink;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlMode {
    None,
    Poll,
    Explicit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelState {
    Unavailable,
    Loading,
    Ready,
    Unloading,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Unavailable => "UNAVAILABLE",
            ModelState::Loading => "LOADING",
            ModelState::Ready => "READY",
            ModelState::Unloading => "UNLOADING",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct RepositoryOptions {
    pub repositories: Vec<PathBuf>,
    pub config_name: Option<String>,
    pub auto_complete: bool,
    /// `--backend-config` settings by backend name; "" holds the global ones.
    pub backend_config: BTreeMap<String, BTreeMap<String, String>>,
    pub gpu_count: usize,
}

/// A load request's overrides (the model repository extension's `config` and `file:` parameters).
#[derive(Clone, Debug, Default)]
pub struct LoadOverride {
    pub config_json: Option<String>,
    /// `<version>/<path>` relative to the model folder → content.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// One row of the repository index.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexEntry {
    pub name: String,
    pub version: Option<i64>,
    pub state: Option<ModelState>,
    pub reason: String,
}

struct VersionSlot {
    state: ModelState,
    reason: String,
    model: Option<Arc<Model>>,
}

#[derive(Default)]
struct ModelEntry {
    versions: BTreeMap<i64, VersionSlot>,
    /// An error that stopped the whole model (config, backend), shown in the index.
    error: Option<String>,
    /// What the folder looked like when last loaded, for polling.
    fingerprint: Option<Fingerprint>,
    /// A load's `file:` overrides live here, never in the user's repository.
    override_dir: Option<tempfile::TempDir>,
}

type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// A model ready to load: its backend (none for an ensemble), final config and versions.
type Prepared = (Option<Arc<dyn Backend>>, ModelConfig, Vec<i64>);

pub struct ModelRepositoryManager {
    options: RepositoryOptions,
    backends: HashMap<String, Arc<dyn Backend>>,
    /// Shared with the ensembles, which find their composing models in it.
    models: Arc<RwLock<BTreeMap<String, ModelEntry>>>,
    /// Load and unload of one model never overlap.
    ops: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    server: ServerLink,
}

impl ModelRepositoryManager {
    pub fn new(options: RepositoryOptions, backends: Vec<Arc<dyn Backend>>) -> Self {
        let server = ServerLink::default();
        for backend in &backends {
            backend.set_server(server.clone());
        }
        let backends = backends.into_iter().map(|b| (b.name().to_string(), b)).collect();
        ModelRepositoryManager {
            options,
            backends,
            models: Arc::default(),
            ops: Mutex::new(HashMap::new()),
            server,
        }
    }

    /// The link [`crate::server::InferenceServer::into_shared`] sets for the backends.
    pub(crate) fn server_link(&self) -> &ServerLink {
        &self.server
    }

    /// Model folders in all repositories; a name found in two is an error for that model.
    pub fn scan(&self) -> BTreeMap<String, Result<PathBuf>> {
        let mut found: BTreeMap<String, Result<PathBuf>> = BTreeMap::new();
        for repo in &self.options.repositories {
            let Ok(entries) = std::fs::read_dir(repo) else {
                log::error!("failed to poll model repository '{}'", repo.display());
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !entry.path().is_dir() {
                    continue;
                }
                match found.get_mut(&name) {
                    Some(slot) => {
                        log::error!(
                            "failed to poll model '{name}': not unique across all model repositories"
                        );
                        *slot = Err(Error::invalid_arg("model appears in two or more repositories"))
                    }
                    None => {
                        found.insert(name, Ok(entry.path()));
                    }
                }
            }
        }
        found
    }

    /// Loads (or reloads) a model: all versions its policy selects. Triton's error texts.
    pub fn load(&self, name: &str, overrides: Option<LoadOverride>) -> Result<()> {
        let op = self.op_lock(name);
        let _guard = op.lock();
        let result = self.load_locked(name, overrides);
        if let Err(e) = &result {
            log::error!("{e}");
        }
        result
    }

    fn load_locked(&self, name: &str, overrides: Option<LoadOverride>) -> Result<()> {
        let mut override_dir = None;
        let model_dir = match overrides.as_ref().filter(|o| !o.files.is_empty()) {
            Some(o) => {
                if o.config_json.is_none() {
                    log::error!("Load parameter 'config' must be specified for model file override");
                    return Err(poll_failed(name));
                }
                let dir = write_override_files(name, &o.files)?;
                let path = dir.path().join(name);
                override_dir = Some(dir);
                path
            }
            None => match self.scan().remove(name) {
                Some(Ok(path)) => path,
                Some(Err(e)) => {
                    self.fail_model(name, e.message.clone());
                    return Err(Error::invalid_arg(format!("failed to load '{name}', {}", e.message)));
                }
                None => return Err(poll_failed(name)),
            },
        };
        let fingerprint = fingerprint(&model_dir);
        let prepared = self
            .prepare(name, &model_dir, overrides.as_ref().and_then(|o| o.config_json.as_deref()))
            .and_then(|p| self.load_composing_models(&p.1).map(|()| p));
        let (backend, config, versions) = match prepared {
            Ok(p) => p,
            Err(e) => {
                self.fail_model(name, e.message.clone());
                self.unload_versions(name, |_| true);
                return Err(Error::invalid_arg(format!("load failed for model '{name}': {}", e.message)));
            }
        };
        let versions: BTreeSet<i64> = versions.into_iter().collect();
        {
            let mut models = self.models.write();
            let entry = models.entry(name.to_string()).or_default();
            entry.error = None;
            for &v in &versions {
                let slot = entry.versions.entry(v).or_insert(VersionSlot {
                    state: ModelState::Loading,
                    reason: String::new(),
                    model: None,
                });
                if slot.model.is_none() {
                    slot.state = ModelState::Loading;
                }
            }
        }
        // Versions load in parallel; each becomes READY or UNAVAILABLE on its own.
        let loaded: Vec<(i64, Result<Model>)> = std::thread::scope(|s| {
            let handles: Vec<_> = versions
                .iter()
                .map(|&v| {
                    let location = ModelLocation {
                        name: name.to_string(),
                        version: v,
                        model_dir: model_dir.clone(),
                        version_dir: model_dir.join(v.to_string()),
                        backend_config: backend
                            .as_ref()
                            .map(|b| self.backend_settings(b.name()))
                            .unwrap_or_default(),
                    };
                    let (backend, config) = (&backend, config.clone());
                    s.spawn(move || {
                        let model = match backend {
                            Some(backend) => Model::load(backend.as_ref(), &location, config),
                            None => Model::load_ensemble(&location, config, self.lookup()),
                        };
                        (v, model)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("model load thread panicked")).collect()
        });
        let mut failures = String::new();
        let mut replaced = Vec::new();
        {
            let mut models = self.models.write();
            let entry = models.entry(name.to_string()).or_default();
            for (v, result) in loaded {
                let slot = entry.versions.get_mut(&v).expect("slot created above");
                match result {
                    Ok(model) => {
                        log::info!("successfully loaded '{name}' version {v}");
                        replaced.extend(slot.model.replace(Arc::new(model)));
                        slot.state = ModelState::Ready;
                        slot.reason.clear();
                    }
                    Err(e) => {
                        let reason = e.as_status_string();
                        failures.push_str(&format!("version {v} is at UNAVAILABLE state: {reason};"));
                        replaced.extend(slot.model.take());
                        slot.state = ModelState::Unavailable;
                        slot.reason = reason;
                    }
                }
            }
            entry.fingerprint = Some(fingerprint);
            if override_dir.is_some() || overrides.is_none() {
                entry.override_dir = override_dir;
            }
        }
        for old in replaced {
            old.unload();
        }
        self.unload_versions(name, |v| !versions.contains(&v));
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid_arg(format!("load failed for model '{name}': {failures}\n")))
        }
    }

    /// Reads, completes and checks the config; picks the backend (none for an ensemble) and the
    /// versions to load.
    fn prepare(&self, name: &str, model_dir: &Path, config_json: Option<&str>) -> Result<Prepared> {
        let mut config = match config_json {
            Some(json) => {
                let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
                    Error::invalid_arg(format!("failed to parse the model configuration: {e}"))
                })?;
                model_config::from_json(&value).map_err(|e| Error::invalid_arg(e.to_string()))?
            }
            None => match model_config::load_config_file(model_dir, self.options.config_name.as_deref())
                .map_err(|e| Error::invalid_arg(e.to_string()))?
            {
                Some(c) => c,
                None if self.options.auto_complete => ModelConfig::default(),
                None => {
                    return Err(Error::invalid_arg(format!(
                        "failed to read model configuration: '{}' does not exist",
                        model_dir.join("config.pbtxt").display()
                    )))
                }
            },
        };
        if !config.name.is_empty() && config.name != name {
            return Err(Error::invalid_arg(format!(
                "unexpected directory name '{name}' for model '{}', directory name must equal model name",
                config.name
            )));
        }
        let available = version_dirs(model_dir);
        if config.backend.is_empty() && config.platform.is_empty() && config.default_model_filename.is_empty()
        {
            if let Some(&latest) = available.last() {
                config.default_model_filename =
                    known_model_file(&model_dir.join(latest.to_string())).unwrap_or_default();
            }
        }
        model_config::fill_defaults(&mut config, name);
        // An ensemble has no backend, instances or auto-complete: its steps run on other models.
        if ensemble_scheduler::is_ensemble(&config) {
            model_config::validate(&config)
                .and_then(|()| model_config::validate_io(&config))
                .map_err(Error::invalid_arg)?;
            let versions = select_versions(&config, &available, name)?;
            return Ok((None, config, versions));
        }
        let backend = self.backends.get(&config.backend).cloned().ok_or_else(|| {
            if config.backend.is_empty() {
                Error::invalid_arg(format!(
                    "Invalid argument: unexpected platform type '{}' for {name}",
                    config.platform
                ))
            } else {
                Error::invalid_arg(format!(
                    "unable to find backend library for backend '{}', try specifying runtime on the model configuration.",
                    config.backend
                ))
            }
        })?;
        if self.options.auto_complete {
            if let Some(&latest) = available.last() {
                let location = ModelLocation {
                    name: name.to_string(),
                    version: latest,
                    model_dir: model_dir.to_path_buf(),
                    version_dir: model_dir.join(latest.to_string()),
                    backend_config: self.backend_settings(backend.name()),
                };
                backend.auto_complete_config(&location, &mut config)?;
            }
        }
        // KIND_AUTO takes a GPU only where the platform allows it and the backend can use one.
        let gpu_count = self.options.gpu_count;
        if gpu_count == 0 || !devices::auto_uses_gpu() || !backend.can_use_gpu() {
            model_config::place_auto_on_cpu(&mut config);
        }
        model_config::resolve_instance_kinds(&mut config, gpu_count);
        model_config::validate(&config)
            .and_then(|()| model_config::validate_io(&config))
            .and_then(|()| model_config::validate_instance_groups(&config, self.options.gpu_count))
            .map_err(Error::invalid_arg)?;
        let versions = select_versions(&config, &available, name)?;
        Ok((Some(backend), config, versions))
    }

    /// Loads an ensemble's composing models that are not loaded yet (as Triton does before
    /// loading an ensemble), then checks the steps against them.
    fn load_composing_models(&self, config: &ModelConfig) -> Result<()> {
        if !ensemble_scheduler::is_ensemble(config) {
            return Ok(());
        }
        let name = &config.name;
        if let Some(cycle) = self.find_cycle(&mut vec![name.clone()], config) {
            return Err(Error::invalid_arg(format!("circular dependency between ensembles: {cycle}")));
        }
        let composing = ensemble_scheduler::composing_models(config);
        let found = self.scan();
        let missing: Vec<&str> = composing
            .iter()
            .map(|(m, _)| m.as_str())
            .filter(|m| !matches!(found.get(*m), Some(Ok(_))))
            .collect();
        if !missing.is_empty() {
            return Err(Error::invalid_arg(format!(
                "ensemble {name} contains models that are not available or ambiguous: {}",
                missing.join(", ")
            )));
        }
        for (model, _) in &composing {
            let op = self.op_lock(model);
            let _guard = op.lock();
            if self.get_model(model, None).is_ok() {
                continue;
            }
            self.load_locked(model, None).map_err(|e| {
                Error::invalid_arg(format!(
                    "ensemble '{name}' depends on '{model}' which has no loaded version. Model '{model}' loading failed with error: {}",
                    e.message
                ))
            })?;
        }
        ensemble_scheduler::validate(config, &self.lookup())
    }

    /// A cycle of ensembles through `path` (as their configs in the repositories say), as
    /// Triton prints it: `a -> ... -> b -> a`.
    fn find_cycle(&self, path: &mut Vec<String>, config: &ModelConfig) -> Option<String> {
        for (model, _) in ensemble_scheduler::composing_models(config) {
            if let Some(start) = path.iter().position(|p| *p == model) {
                return Some(format!(
                    "{} -> ... -> {} -> {}",
                    path[start],
                    path[path.len() - 1],
                    path[start]
                ));
            }
            let Some(next) = self.repository_config(&model) else { continue };
            if ensemble_scheduler::is_ensemble(&next) {
                path.push(model);
                let cycle = self.find_cycle(path, &next);
                path.pop();
                if cycle.is_some() {
                    return cycle;
                }
            }
        }
        None
    }

    /// A model's config as its repository holds it.
    fn repository_config(&self, name: &str) -> Option<ModelConfig> {
        let dir = self.scan().remove(name)?.ok()?;
        model_config::load_config_file(&dir, self.options.config_name.as_deref()).ok().flatten()
    }

    /// How ensembles find their composing models at request time.
    fn lookup(&self) -> ModelLookup {
        let models = Arc::downgrade(&self.models);
        Arc::new(move |name: &str, version: Option<i64>| {
            let models =
                Weak::upgrade(&models).ok_or_else(|| Error::unavailable("the server is shutting down"))?;
            let models = models.read();
            find_model(&models, name, version)
        })
    }

    /// Unloads every version; Triton's errors when the model was never served.
    pub fn unload(&self, name: &str) -> Result<()> {
        let op = self.op_lock(name);
        let _guard = op.lock();
        if !self.models.read().contains_key(name) {
            return Err(Error::invalid_arg(format!(
                "failed to unload '{name}', Model to be unloaded has not been served"
            )));
        }
        self.unload_versions(name, |_| true);
        drop(_guard);
        // As in Triton, an ensemble goes with any of its composing models.
        for ensemble in self.ensembles_using(name) {
            let _ = self.unload(&ensemble);
        }
        Ok(())
    }

    /// Loaded ensembles with a step on `model`.
    fn ensembles_using(&self, model: &str) -> Vec<String> {
        let models = self.models.read();
        let uses =
            |m: &Arc<Model>| ensemble_scheduler::composing_models(&m.config).iter().any(|(c, _)| c == model);
        (models.iter())
            .filter(|(_, e)| e.versions.values().any(|s| s.model.as_ref().is_some_and(uses)))
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn unload_versions(&self, name: &str, which: impl Fn(i64) -> bool) {
        let mut going = Vec::new();
        if let Some(entry) = self.models.write().get_mut(name) {
            for (&v, slot) in entry.versions.iter_mut().filter(|(&v, _)| which(v)) {
                if let Some(model) = slot.model.take() {
                    slot.state = ModelState::Unloading;
                    going.push((v, model));
                } else if slot.state != ModelState::Unavailable || slot.reason.is_empty() {
                    slot.state = ModelState::Unavailable;
                    slot.reason = "unloaded".into();
                }
            }
        }
        for (v, model) in going {
            model.unload();
            drop(model);
            if let Some(slot) = self.models.write().get_mut(name).and_then(|e| e.versions.get_mut(&v)) {
                if slot.model.is_none() {
                    slot.state = ModelState::Unavailable;
                    slot.reason = "unloaded".into();
                }
            }
            log::info!("successfully unloaded '{name}' version {v}");
        }
    }

    /// `--backend-config` for one backend: global settings overlaid by the backend's own.
    fn backend_settings(&self, backend: &str) -> BTreeMap<String, String> {
        let mut settings = self.options.backend_config.get("").cloned().unwrap_or_default();
        settings.extend(self.options.backend_config.get(backend).cloned().unwrap_or_default());
        settings
    }

    fn fail_model(&self, name: &str, reason: String) {
        self.models.write().entry(name.to_string()).or_default().error = Some(reason);
    }

    fn op_lock(&self, name: &str) -> Arc<Mutex<()>> {
        self.ops.lock().entry(name.to_string()).or_default().clone()
    }

    /// The version a request should use: the one asked for, or the newest ready one.
    pub fn get_model(&self, name: &str, version: Option<i64>) -> Result<Arc<Model>> {
        find_model(&self.models.read(), name, version)
    }

    /// Every loaded-ready model version, for statistics.
    pub fn ready_models(&self) -> Vec<Arc<Model>> {
        let models = self.models.read();
        models.values().flat_map(|e| e.versions.values().filter_map(|s| s.model.clone())).collect()
    }

    /// Models known to the manager, with their versions.
    pub fn versions(&self, name: &str) -> Vec<(i64, ModelState)> {
        self.models
            .read()
            .get(name)
            .map(|e| e.versions.iter().map(|(&v, s)| (v, s.state)).collect())
            .unwrap_or_default()
    }

    /// Triton's repository index: every model in the repositories and every one loaded.
    pub fn index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let mut out = Vec::new();
        let models = self.models.read();
        let mut names: BTreeSet<String> = self.scan().into_keys().collect();
        names.extend(models.keys().cloned());
        for name in names {
            match models.get(&name) {
                Some(entry) if !entry.versions.is_empty() => {
                    for (&v, slot) in &entry.versions {
                        if ready_only && slot.state != ModelState::Ready {
                            continue;
                        }
                        let reason = match (&entry.error, slot.state) {
                            (Some(e), ModelState::Unavailable) => e.clone(),
                            _ => slot.reason.clone(),
                        };
                        out.push(IndexEntry {
                            name: name.clone(),
                            version: Some(v),
                            state: Some(slot.state),
                            reason,
                        });
                    }
                }
                Some(entry) if !ready_only && entry.error.is_some() => out.push(IndexEntry {
                    name,
                    version: None,
                    state: Some(ModelState::Unavailable),
                    reason: entry.error.clone().unwrap_or_default(),
                }),
                _ if !ready_only => {
                    out.push(IndexEntry { name, version: None, state: None, reason: String::new() })
                }
                _ => {}
            }
        }
        out
    }

    /// Loads what is new or changed and unloads what is gone (poll mode).
    pub fn poll(&self) {
        let found = self.scan();
        let known: Vec<(String, Option<Fingerprint>, bool)> = self
            .models
            .read()
            .iter()
            .map(|(n, e)| (n.clone(), e.fingerprint.clone(), e.override_dir.is_some()))
            .collect();
        for (name, fp, overridden) in &known {
            match found.get(name) {
                Some(Ok(dir)) if !overridden && fp.as_ref() != Some(&fingerprint(dir)) => {
                    let _ = self.load(name, None);
                }
                None if !overridden => {
                    let _ = self.unload(name);
                    self.models.write().remove(name);
                }
                _ => {}
            }
        }
        let new: Vec<String> = (found.into_iter())
            .filter(|(name, dir)| dir.is_ok() && !known.iter().any(|(n, _, _)| n == name))
            .map(|(name, _)| name)
            .collect();
        self.load_all(&new);
    }

    /// Loads models in parallel (startup, new models when polling), ensembles after the others
    /// so that they find their composing models loaded rather than load them too. True when
    /// all loaded.
    pub fn load_all(&self, names: &[String]) -> bool {
        let (ensembles, plain): (Vec<&String>, Vec<&String>) = names
            .iter()
            .partition(|n| self.repository_config(n).is_some_and(|c| ensemble_scheduler::is_ensemble(&c)));
        [plain, ensembles].into_iter().fold(true, |all, names| {
            let loaded = std::thread::scope(|s| {
                let handles: Vec<_> = names.iter().map(|m| s.spawn(|| self.load(m, None).is_ok())).collect();
                handles.into_iter().all(|h| h.join().unwrap_or(false))
            });
            all && loaded
        })
    }

    /// Unloads everything (shutdown).
    pub fn unload_all(&self) {
        let names: Vec<String> = self.models.read().keys().cloned().collect();
        for name in names {
            self.unload_versions(&name, |_| true);
        }
    }

    /// True when every version that was asked to load is ready.
    pub fn all_ready(&self) -> bool {
        self.models.read().values().all(|e| {
            e.error.is_none()
                && e.versions.values().all(|s| s.state == ModelState::Ready || s.reason == "unloaded")
        })
    }
}

/// The version a request should use: the one asked for, or the newest ready one.
fn find_model(models: &BTreeMap<String, ModelEntry>, name: &str, version: Option<i64>) -> Result<Arc<Model>> {
    let Some(entry) = models.get(name).filter(|e| !e.versions.is_empty()) else {
        return Err(Error::not_found(format!("Request for unknown model: '{name}' is not found")));
    };
    match version {
        Some(v) => match entry.versions.get(&v) {
            None => {
                Err(Error::not_found(format!("Request for unknown model: '{name}' version {v} is not found")))
            }
            Some(slot) => match (&slot.model, slot.state) {
                (Some(m), ModelState::Ready) => Ok(m.clone()),
                _ => Err(Error::unavailable(format!(
                    "Request for unknown model: '{name}' version {v} is not at ready state"
                ))),
            },
        },
        None => (entry.versions.values().rev())
            .find(|s| s.state == ModelState::Ready)
            .and_then(|s| s.model.clone())
            .ok_or_else(|| {
                Error::not_found(format!("Request for unknown model: '{name}' has no available versions"))
            }),
    }
}

/// Triton's answer to a load whose model could not be read from the repositories.
fn poll_failed(name: &str) -> Error {
    Error::internal(format!("failed to load '{name}', failed to poll from model repository"))
}

/// Numeric version folders; names starting with '0' or not numeric are ignored, as in Triton.
pub fn version_dirs(model_dir: &Path) -> Vec<i64> {
    let mut versions: Vec<i64> = std::fs::read_dir(model_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('0') {
                return None;
            }
            name.parse::<i64>().ok().filter(|v| *v > 0 && v.to_string() == name)
        })
        .collect();
    versions.sort_unstable();
    versions
}

/// With neither backend nor platform configured, Triton goes by the model file it finds.
fn known_model_file(version_dir: &Path) -> Option<String> {
    const KNOWN: [&str; 6] =
        ["model.onnx", "model.pt", "model.py", "model.plan", "model.savedmodel", "model.graphdef"];
    KNOWN.iter().find(|f| version_dir.join(f).exists()).map(|f| f.to_string())
}

/// The versions the config's `version_policy` selects from those present.
pub fn select_versions(config: &ModelConfig, available: &[i64], name: &str) -> Result<Vec<i64>> {
    use model_version_policy::PolicyChoice;
    let chosen: Vec<i64> = match config.version_policy.as_ref().and_then(|p| p.policy_choice.as_ref()) {
        Some(PolicyChoice::All(_)) => available.to_vec(),
        Some(PolicyChoice::Specific(s)) => {
            for v in &s.versions {
                if !available.contains(v) {
                    return Err(Error::invalid_arg(format!(
                        "version {v} is specified for model '{name}', but the version directory is not present"
                    )));
                }
            }
            s.versions.clone()
        }
        Some(PolicyChoice::Latest(l)) => {
            let n = (l.num_versions.max(1) as usize).min(available.len());
            available[available.len() - n..].to_vec()
        }
        None => available.last().copied().into_iter().collect(),
    };
    if chosen.is_empty() {
        return Err(Error::invalid_arg(format!(
            "at least one version must be available under the version policy of model '{name}'"
        )));
    }
    Ok(chosen)
}

/// Paths, modification times and sizes of everything under a model folder.
fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            let meta = e.metadata().ok();
            if meta.as_ref().is_some_and(|m| m.is_dir()) {
                stack.push(path.clone());
            }
            out.push((
                path,
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.map(|m| m.len()).unwrap_or(0),
            ));
        }
    }
    out.sort();
    out
}

/// Writes `file:` overrides into a fresh temporary model folder.
fn write_override_files(name: &str, files: &BTreeMap<String, Vec<u8>>) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("nereid-model-")
        .tempdir()
        .map_err(|e| Error::internal(format!("failed to create a temporary model directory: {e}")))?;
    let root = dir.path().join(name);
    for (rel, content) in files {
        let rel_path = Path::new(rel);
        if rel_path.is_absolute()
            || rel_path.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(Error::invalid_arg(format!("invalid file path '{rel}' in model load request")));
        }
        let path = root.join(rel_path);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&path, content));
        written.map_err(|e| Error::internal(format!("failed to write '{}': {e}", path.display())))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nereid_proto::inference::{model_version_policy as mvp, ModelVersionPolicy};

    fn with_policy(p: mvp::PolicyChoice) -> ModelConfig {
        ModelConfig {
            version_policy: Some(ModelVersionPolicy { policy_choice: Some(p) }),
            ..Default::default()
        }
    }

    #[test]
    fn version_folders_follow_triton_rules() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["1", "3", "10", "01", "0", "abc", "-2"] {
            std::fs::create_dir(dir.path().join(v)).unwrap();
        }
        std::fs::write(dir.path().join("7"), "a file, not a folder").unwrap();
        assert_eq!(version_dirs(dir.path()), vec![1, 3, 10]);
    }

    #[test]
    fn version_policies() {
        let avail = [1, 2, 5];
        assert_eq!(select_versions(&ModelConfig::default(), &avail, "m").unwrap(), vec![5]);
        let latest2 = with_policy(mvp::PolicyChoice::Latest(mvp::Latest { num_versions: 2 }));
        assert_eq!(select_versions(&latest2, &avail, "m").unwrap(), vec![2, 5]);
        let all = with_policy(mvp::PolicyChoice::All(mvp::All {}));
        assert_eq!(select_versions(&all, &avail, "m").unwrap(), vec![1, 2, 5]);
        let specific = with_policy(mvp::PolicyChoice::Specific(mvp::Specific { versions: vec![1, 5] }));
        assert_eq!(select_versions(&specific, &avail, "m").unwrap(), vec![1, 5]);
        let missing = with_policy(mvp::PolicyChoice::Specific(mvp::Specific { versions: vec![3] }));
        assert!(select_versions(&missing, &avail, "m").unwrap_err().message.contains("version 3"));
        assert!(select_versions(&ModelConfig::default(), &[], "m").is_err());
    }

    #[test]
    fn override_files_stay_inside_their_folder() {
        let mut files = BTreeMap::new();
        files.insert("1/model.onnx".to_string(), b"abc".to_vec());
        let dir = write_override_files("m", &files).unwrap();
        assert_eq!(std::fs::read(dir.path().join("m/1/model.onnx")).unwrap(), b"abc");
        files.insert("../escape".to_string(), vec![]);
        assert!(write_override_files("m", &files).is_err());
    }
}
