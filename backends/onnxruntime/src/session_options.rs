//! Session settings from the model config, read as Triton's onnxruntime backend reads them:
//! the graph optimization level from `optimization { graph { level } }`, and the `parameters`
//! `intra_op_thread_count`, `inter_op_thread_count`, `execution_mode`, `enable_mem_arena`,
//! `enable_mem_pattern`, `session.use_device_allocator_for_initializers` and, per run,
//! `memory.enable_memory_arena_shrinkage`.

use nereid_proto::inference::ModelConfig;
use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::AsPointer;

use crate::parse::{model_parameter, parse_bool, parse_int};

const DEVICE_ALLOCATOR_FOR_INITIALIZERS: &str = "session.use_device_allocator_for_initializers";
const ARENA_SHRINKAGE: &str = "memory.enable_memory_arena_shrinkage";

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SessionOptions {
    pub optimization: GraphOptimizationLevel,
    pub parallel_execution: bool,
    /// 0 leaves the choice to ONNX Runtime.
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    pub mem_arena: Option<bool>,
    pub mem_pattern: Option<bool>,
    pub device_allocator_for_initializers: Option<String>,
    pub arena_shrinkage: Option<String>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            optimization: GraphOptimizationLevel::All,
            parallel_execution: false,
            intra_op_threads: 0,
            inter_op_threads: 0,
            mem_arena: None,
            mem_pattern: None,
            device_allocator_for_initializers: None,
            arena_shrinkage: None,
        }
    }
}

impl SessionOptions {
    pub fn from_config(config: &ModelConfig) -> Result<SessionOptions, String> {
        let level = config.optimization.as_ref().and_then(|o| o.graph.as_ref()).map_or(0, |g| g.level);
        let optimization = match level {
            -1 => GraphOptimizationLevel::Level1,
            1 => GraphOptimizationLevel::Level2,
            2 => GraphOptimizationLevel::Disable,
            _ => GraphOptimizationLevel::All,
        };
        let int = |key| model_parameter(config, key).map(parse_int).transpose();
        let parallel_execution = match int("execution_mode")?.unwrap_or(0) {
            0 => false,
            1 => true,
            // Triton's text, double space included.
            other => {
                return Err(format!(
                    "Invalid configuration value provided. Expected values for  execution_mode are 0 or 1 but got {other} ."
                ))
            }
        };
        // As in Triton, a count below 1 leaves ONNX Runtime's default.
        let threads = |key| int(key).map(|n| n.unwrap_or(0).max(0) as usize);
        let flag = |key| model_parameter(config, key).map(parse_bool).transpose();
        let text = |key| model_parameter(config, key).map(str::to_string);
        Ok(SessionOptions {
            optimization,
            parallel_execution,
            intra_op_threads: threads("intra_op_thread_count")?,
            inter_op_threads: threads("inter_op_thread_count")?,
            mem_arena: flag("enable_mem_arena")?,
            mem_pattern: flag("enable_mem_pattern")?,
            device_allocator_for_initializers: text(DEVICE_ALLOCATOR_FOR_INITIALIZERS),
            arena_shrinkage: text(ARENA_SHRINKAGE),
        })
    }

    /// A session builder with these settings (execution providers are added by the caller).
    pub fn builder(&self, env: &Environment) -> Result<SessionBuilder, String> {
        let mut builder = Session::builder(env)
            .map_err(|e| e.to_string())?
            .with_optimization_level(self.optimization)
            .map_err(|e| e.to_string())?
            .with_parallel_execution(self.parallel_execution)
            .map_err(|e| e.to_string())?;
        if self.intra_op_threads > 0 {
            builder = builder.with_intra_threads(self.intra_op_threads).map_err(|e| e.to_string())?;
        }
        if self.inter_op_threads > 0 {
            builder = builder.with_inter_threads(self.inter_op_threads).map_err(|e| e.to_string())?;
        }
        if let Some(enable) = self.mem_arena {
            let api = ort::api();
            let toggle = if enable { api.EnableCpuMemArena } else { api.DisableCpuMemArena };
            // SAFETY: the builder's session options pointer is valid while `builder` lives, and
            // the status returned is ONNX Runtime's to hand over.
            unsafe { ort::Error::result_from_status(toggle(builder.ptr_mut())) }
                .map_err(|e| e.to_string())?;
        }
        if let Some(enable) = self.mem_pattern {
            builder = builder.with_memory_pattern(enable).map_err(|e| e.to_string())?;
        }
        if let Some(value) = &self.device_allocator_for_initializers {
            builder = builder
                .with_config_entry(DEVICE_ALLOCATOR_FOR_INITIALIZERS, value)
                .map_err(|e| e.to_string())?;
        }
        Ok(builder)
    }

    /// Run options that compute only `outputs` (the configured ones, as Triton binds them).
    pub fn run_options(&self, outputs: &[String]) -> ort::Result<RunOptions<HasSelectedOutputs>> {
        let mut options = RunOptions::new()?;
        if let Some(value) = &self.arena_shrinkage {
            options.set(ARENA_SHRINKAGE, value)?;
        }
        let selected = outputs.iter().fold(OutputSelector::no_default(), |s, name| s.with(name.clone()));
        Ok(options.with_outputs(selected))
    }
}

#[cfg(test)]
mod tests {
    use nereid_proto::inference::model_optimization_policy::Graph;
    use nereid_proto::inference::{ModelOptimizationPolicy, ModelParameter};

    use super::*;

    fn config(params: &[(&str, &str)], level: Option<i32>) -> ModelConfig {
        let parameters = params
            .iter()
            .map(|(k, v)| (k.to_string(), ModelParameter { string_value: v.to_string() }))
            .collect();
        let optimization =
            level.map(|level| ModelOptimizationPolicy { graph: Some(Graph { level }), ..Default::default() });
        ModelConfig { parameters, optimization, ..Default::default() }
    }

    #[test]
    fn defaults_leave_onnx_runtime_alone() {
        assert_eq!(SessionOptions::from_config(&config(&[], None)), Ok(SessionOptions::default()));
    }

    #[test]
    fn graph_levels_as_triton_maps_them() {
        let level = |l| SessionOptions::from_config(&config(&[], Some(l))).unwrap().optimization;
        assert_eq!(level(-1), GraphOptimizationLevel::Level1);
        assert_eq!(level(0), GraphOptimizationLevel::All);
        assert_eq!(level(1), GraphOptimizationLevel::Level2);
        assert_eq!(level(2), GraphOptimizationLevel::Disable);
        assert_eq!(level(7), GraphOptimizationLevel::All);
    }

    #[test]
    fn parameters_are_parsed_with_triton_errors() {
        let params = [
            ("intra_op_thread_count", "3"),
            ("inter_op_thread_count", "-1"),
            ("execution_mode", "1"),
            ("enable_mem_arena", "off"),
            ("enable_mem_pattern", "TRUE"),
            ("session.use_device_allocator_for_initializers", "1"),
            ("memory.enable_memory_arena_shrinkage", "cpu:0"),
        ];
        let options = SessionOptions::from_config(&config(&params, None)).unwrap();
        assert_eq!(
            options,
            SessionOptions {
                optimization: GraphOptimizationLevel::All,
                parallel_execution: true,
                intra_op_threads: 3,
                inter_op_threads: 0,
                mem_arena: Some(false),
                mem_pattern: Some(true),
                device_allocator_for_initializers: Some("1".into()),
                arena_shrinkage: Some("cpu:0".into()),
            }
        );
        let err = |params: &[(&str, &str)]| SessionOptions::from_config(&config(params, None)).unwrap_err();
        assert_eq!(
            err(&[("execution_mode", "2")]),
            "Invalid configuration value provided. Expected values for  execution_mode are 0 or 1 but got 2 ."
        );
        assert_eq!(err(&[("intra_op_thread_count", "many")]), "failed to convert 'many' to integral number");
        assert_eq!(err(&[("enable_mem_arena", "maybe")]), "failed to convert 'maybe' to boolean");
    }
}
