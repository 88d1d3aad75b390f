//! Execution providers for an instance: which ones and with which options (plain rules, tested
//! for every platform), and registering them on a session.
//!
//! As in Triton's backend, GPU instances get the platform's GPU provider (CUDA on Linux, after
//! TensorRT when `gpu_execution_accelerator` names it; CoreML on macOS), `cuda`/`tensorrt`
//! accelerators are read only for GPU instances, and their parameters become provider options.
//! Beyond Triton, a `coreml` accelerator selects CoreML for any instance kind. A provider that the
//! loaded ONNX Runtime lacks, or that fails to start, fails the load unless the model parameter
//! `cpu_fallback` is true.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::ptr;

use nereid_core::backend::InstanceKind;
use nereid_proto::inference::model_optimization_policy::execution_accelerators::Accelerator;
use nereid_proto::inference::ModelConfig;
use ort::ep::{ArbitrarilyConfigurableExecutionProvider, ExecutionProviderDispatch};
use ort::session::builder::SessionBuilder;

use crate::library::Platform;
use crate::parse::{model_parameter, parse_bool, parse_int, parse_u64};

/// The model parameter that lets a missing or failing provider fall back to the CPU.
pub(crate) const CPU_FALLBACK: &str = "cpu_fallback";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    TensorRt,
    Cuda,
    CoreMl,
}

impl Provider {
    /// ONNX Runtime's name, as `GetAvailableProviders` lists it.
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::TensorRt => "TensorrtExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::CoreMl => "CoreMLExecutionProvider",
        }
    }

    /// The GPU provider GPU instances get on a platform.
    pub fn for_gpu(platform: Platform) -> Provider {
        match platform {
            Platform::Linux => Provider::Cuda,
            Platform::MacOs => Provider::CoreMl,
        }
    }

    fn dispatch(self, options: &BTreeMap<String, String>) -> ExecutionProviderDispatch {
        fn configure<E: ArbitrarilyConfigurableExecutionProvider>(
            ep: E,
            options: &BTreeMap<String, String>,
        ) -> E {
            options.iter().fold(ep, |ep, (key, value)| ep.with_arbitrary_config(key, value))
        }
        match self {
            Provider::TensorRt => configure(ort::ep::TensorRT::default(), options).build(),
            Provider::Cuda => configure(ort::ep::CUDA::default(), options).build(),
            Provider::CoreMl => configure(ort::ep::CoreML::default(), options).build(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProviderSetup {
    pub provider: Provider,
    /// ONNX Runtime's provider option keys and values.
    pub options: BTreeMap<String, String>,
}

/// The providers for one instance, in registration order; the CPU provider is always last.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Plan {
    pub providers: Vec<ProviderSetup>,
    pub cpu_fallback: bool,
}

fn unknown_accelerator(name: &str) -> String {
    format!("unknown Execution Accelerator '{name}' is requested")
}

pub(crate) fn plan(
    config: &ModelConfig,
    kind: InstanceKind,
    device_id: i32,
    platform: Platform,
) -> Result<Plan, String> {
    let cpu_fallback = model_parameter(config, CPU_FALLBACK).map(parse_bool).transpose()?.unwrap_or(false);
    let accelerators = config.optimization.as_ref().and_then(|o| o.execution_accelerators.as_ref());
    let (gpu, cpu) = accelerators
        .map_or((&[][..], &[][..]), |a| (&a.gpu_execution_accelerator[..], &a.cpu_execution_accelerator[..]));
    // Triton knows OpenVINO here only in builds with it, which ONNX Runtime's wheels are not.
    if let Some(accelerator) = cpu.first() {
        return Err(unknown_accelerator(&accelerator.name));
    }
    let on_gpu = kind == InstanceKind::Gpu;
    let device = device_id.to_string();
    let mut providers = Vec::new();
    let mut cuda: Option<BTreeMap<String, String>> = None;
    for accelerator in gpu {
        let setup = |provider, options| ProviderSetup { provider, options };
        match accelerator.name.as_str() {
            "coreml" => providers.push(setup(Provider::CoreMl, parameters(accelerator))),
            _ if !on_gpu => {}
            "tensorrt" => {
                let mut options = tensorrt_options(accelerator)?;
                options.insert("device_id".into(), device.clone());
                providers.push(setup(Provider::TensorRt, options));
            }
            "cuda" => cuda.get_or_insert_with(BTreeMap::new).extend(cuda_options(accelerator)?),
            other => return Err(unknown_accelerator(other)),
        }
    }
    if on_gpu {
        match Provider::for_gpu(platform) {
            Provider::CoreMl if !providers.iter().any(|p| p.provider == Provider::CoreMl) => {
                providers.push(ProviderSetup { provider: Provider::CoreMl, options: BTreeMap::new() })
            }
            Provider::Cuda => {
                cuda.get_or_insert_with(BTreeMap::new);
            }
            _ => {}
        }
    }
    if let Some(mut options) = cuda {
        options.insert("device_id".into(), device);
        options.extend(legacy_cuda_parameters(config)?);
        providers.push(ProviderSetup { provider: Provider::Cuda, options });
    }
    Ok(Plan { providers, cpu_fallback })
}

/// An accelerator's parameters, passed through as provider options.
fn parameters(accelerator: &Accelerator) -> BTreeMap<String, String> {
    accelerator.parameters.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The `cuda` accelerator's parameters are CUDA provider options; Triton checks two booleans.
fn cuda_options(accelerator: &Accelerator) -> Result<BTreeMap<String, String>, String> {
    let options = parameters(accelerator);
    for key in ["do_copy_in_default_stream", "use_ep_level_unified_stream"] {
        options.get(key).map(|v| parse_bool(v)).transpose()?;
    }
    Ok(options.into_iter().filter(|(_, v)| !v.is_empty()).collect())
}

/// CUDA settings Triton still reads from the model's `parameters` (deprecated there).
fn legacy_cuda_parameters(config: &ModelConfig) -> Result<BTreeMap<String, String>, String> {
    let mut options = BTreeMap::new();
    let named = |key: &str, names: &[&str]| -> Result<Option<String>, String> {
        let Some(value) = model_parameter(config, key) else { return Ok(None) };
        let index = parse_int(value)?;
        let name = usize::try_from(index).ok().and_then(|i| names.get(i));
        name.map(|n| Some(n.to_string()))
            .ok_or_else(|| format!("unsupported {key} value '{index}' is requested"))
    };
    if let Some(search) = named("cudnn_conv_algo_search", &["EXHAUSTIVE", "HEURISTIC", "DEFAULT"])? {
        options.insert("cudnn_conv_algo_search".into(), search);
    }
    if let Some(strategy) = named("arena_extend_strategy", &["kNextPowerOfTwo", "kSameAsRequested"])? {
        options.insert("arena_extend_strategy".into(), strategy);
    }
    for key in ["gpu_mem_limit", "do_copy_in_default_stream"] {
        if let Some(value) = model_parameter(config, key) {
            options.insert(key.into(), value.into());
        }
    }
    Ok(options)
}

#[derive(Clone, Copy)]
enum Check {
    Bool,
    Int,
    Uint,
    Text,
}

/// Triton's TensorRT accelerator parameters: (parameter, provider option, value check).
const TENSORRT_PARAMETERS: &[(&str, &str, Check)] = &[
    ("max_workspace_size_bytes", "trt_max_workspace_size", Check::Uint),
    ("trt_max_partition_iterations", "trt_max_partition_iterations", Check::Int),
    ("trt_min_subgraph_size", "trt_min_subgraph_size", Check::Int),
    ("int8_calibration_table_name", "trt_int8_calibration_table_name", Check::Text),
    ("int8_use_native_calibration_table", "trt_int8_use_native_calibration_table", Check::Bool),
    ("trt_dla_enable", "trt_dla_enable", Check::Bool),
    ("trt_dla_core", "trt_dla_core", Check::Int),
    ("trt_engine_cache_enable", "trt_engine_cache_enable", Check::Bool),
    ("trt_engine_cache_path", "trt_engine_cache_path", Check::Text),
    ("trt_engine_cache_prefix", "trt_engine_cache_prefix", Check::Text),
    ("trt_dump_subgraphs", "trt_dump_subgraphs", Check::Bool),
    ("trt_force_sequential_engine_build", "trt_force_sequential_engine_build", Check::Bool),
    ("trt_context_memory_sharing_enable", "trt_context_memory_sharing_enable", Check::Bool),
    ("trt_layer_norm_fp32_fallback", "trt_layer_norm_fp32_fallback", Check::Bool),
    ("trt_timing_cache_enable", "trt_timing_cache_enable", Check::Bool),
    ("trt_timing_cache_path", "trt_timing_cache_path", Check::Text),
    ("trt_force_timing_cache", "trt_force_timing_cache", Check::Bool),
    ("trt_detailed_build_log", "trt_detailed_build_log", Check::Bool),
    ("trt_build_heuristics_enable", "trt_build_heuristics_enable", Check::Bool),
    ("trt_sparsity_enable", "trt_sparsity_enable", Check::Bool),
    ("trt_builder_optimization_level", "trt_builder_optimization_level", Check::Int),
    ("trt_auxiliary_streams", "trt_auxiliary_streams", Check::Int),
    ("trt_tactic_sources", "trt_tactic_sources", Check::Text),
    ("trt_extra_plugin_lib_paths", "trt_extra_plugin_lib_paths", Check::Text),
    ("trt_profile_min_shapes", "trt_profile_min_shapes", Check::Text),
    ("trt_profile_max_shapes", "trt_profile_max_shapes", Check::Text),
    ("trt_profile_opt_shapes", "trt_profile_opt_shapes", Check::Text),
    ("trt_cuda_graph_enable", "trt_cuda_graph_enable", Check::Bool),
    ("trt_dump_ep_context_model", "trt_dump_ep_context_model", Check::Bool),
    ("trt_ep_context_file_path", "trt_ep_context_file_path", Check::Text),
    ("trt_ep_context_embed_mode", "trt_ep_context_embed_mode", Check::Int),
];

fn tensorrt_options(accelerator: &Accelerator) -> Result<BTreeMap<String, String>, String> {
    let mut options = BTreeMap::new();
    for (key, value) in parameters(accelerator) {
        if key == "precision_mode" {
            let flag = match value.as_str() {
                "FP16" => "trt_fp16_enable",
                "BF16" => "trt_bf16_enable",
                "INT8" => "trt_int8_enable",
                "FP32" => continue,
                other => return Err(format!("unsupported precision mode '{other}' is requested")),
            };
            options.insert(flag.to_string(), "1".to_string());
            continue;
        }
        let Some(&(_, option, check)) = TENSORRT_PARAMETERS.iter().find(|(name, ..)| *name == key) else {
            return Err(format!("unknown parameter '{key}' is provided for TensorRT Execution Accelerator"));
        };
        match check {
            Check::Bool => drop(parse_bool(&value)?),
            Check::Int => drop(parse_int(&value)?),
            Check::Uint => drop(parse_u64(&value)?),
            Check::Text => {}
        }
        if !value.is_empty() {
            options.insert(option.to_string(), value);
        }
    }
    Ok(options)
}

/// The providers the loaded ONNX Runtime was built with.
pub(crate) fn available() -> Result<Vec<String>, String> {
    let api = ort::api();
    let mut names = ptr::null_mut();
    let mut count = 0;
    // SAFETY: ONNX Runtime fills `names` with `count` C strings, released below.
    unsafe {
        ort::Error::result_from_status((api.GetAvailableProviders)(&mut names, &mut count))
            .map_err(|e| e.to_string())?;
        let list = (0..count.max(0) as usize)
            .map(|i| CStr::from_ptr(*names.add(i)).to_string_lossy().into_owned())
            .collect();
        ort::Error::result_from_status((api.ReleaseAvailableProviders)(names, count))
            .map_err(|e| e.to_string())?;
        Ok(list)
    }
}

/// Registers the plan's providers; returns the ones registered. A missing or failing provider
/// is an error, or with `cpu_fallback` a warning.
pub(crate) fn register(plan: &Plan, builder: &mut SessionBuilder) -> Result<Vec<Provider>, String> {
    let available = available()?;
    let mut registered = Vec::new();
    for setup in &plan.providers {
        let name = setup.provider.ort_name();
        let result = if available.iter().any(|a| a == name) {
            setup
                .provider
                .dispatch(&setup.options)
                .register(builder)
                .map_err(|e| format!("{name} failed: {e}"))
        } else {
            Err(format!(
                "{name} is not available in the loaded ONNX Runtime, which has {}",
                available.join(", ")
            ))
        };
        match result {
            Ok(()) => registered.push(setup.provider),
            Err(reason) if plan.cpu_fallback => {
                log::warn!("{reason}; falling back to the CPU ({CPU_FALLBACK})")
            }
            Err(reason) => {
                return Err(format!(
                    "{reason}. Use an ONNX Runtime build with it (CUDA and TensorRT: the onnxruntime-gpu \
                     wheel; CoreML: the macOS onnxruntime wheel), or set the model parameter \
                     '{CPU_FALLBACK}' to true to run on the CPU instead"
                ))
            }
        }
    }
    Ok(registered)
}

#[cfg(test)]
mod tests {
    use nereid_proto::inference::model_optimization_policy::ExecutionAccelerators;
    use nereid_proto::inference::{ModelOptimizationPolicy, ModelParameter};

    use super::*;

    fn accelerator(name: &str, params: &[(&str, &str)]) -> Accelerator {
        let parameters = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Accelerator { name: name.into(), parameters }
    }

    fn config(gpu: Vec<Accelerator>, params: &[(&str, &str)]) -> ModelConfig {
        let accelerators = ExecutionAccelerators { gpu_execution_accelerator: gpu, ..Default::default() };
        let parameters = params
            .iter()
            .map(|(k, v)| (k.to_string(), ModelParameter { string_value: v.to_string() }))
            .collect();
        ModelConfig {
            optimization: Some(ModelOptimizationPolicy {
                execution_accelerators: Some(accelerators),
                ..Default::default()
            }),
            parameters,
            ..Default::default()
        }
    }

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn providers(config: &ModelConfig, kind: InstanceKind, platform: Platform) -> Vec<ProviderSetup> {
        plan(config, kind, 1, platform).unwrap().providers
    }

    #[test]
    fn cpu_instances_run_on_the_cpu_everywhere() {
        let plain = ModelConfig::default();
        for platform in [Platform::Linux, Platform::MacOs] {
            assert_eq!(plan(&plain, InstanceKind::Cpu, 0, platform).unwrap().providers, vec![]);
            // GPU accelerators other than CoreML are read only for GPU instances, as in Triton.
            let cuda = config(vec![accelerator("cuda", &[]), accelerator("mystery", &[])], &[]);
            assert_eq!(providers(&cuda, InstanceKind::Cpu, platform), vec![]);
        }
    }

    #[test]
    fn gpu_instances_get_the_platform_gpu_provider_on_their_device() {
        let plain = ModelConfig::default();
        let cuda = ProviderSetup { provider: Provider::Cuda, options: options(&[("device_id", "1")]) };
        assert_eq!(providers(&plain, InstanceKind::Gpu, Platform::Linux), vec![cuda]);
        let coreml = ProviderSetup { provider: Provider::CoreMl, options: BTreeMap::new() };
        assert_eq!(providers(&plain, InstanceKind::Gpu, Platform::MacOs), vec![coreml]);
    }

    #[test]
    fn coreml_accelerator_with_its_options_on_any_kind() {
        let config = config(vec![accelerator("coreml", &[("MLComputeUnits", "CPUAndGPU")])], &[]);
        let expected = vec![ProviderSetup {
            provider: Provider::CoreMl,
            options: options(&[("MLComputeUnits", "CPUAndGPU")]),
        }];
        for kind in [InstanceKind::Cpu, InstanceKind::Gpu] {
            assert_eq!(providers(&config, kind, Platform::MacOs), expected);
        }
        // Asked for on Linux it is still asked for: registering it reports that it is missing.
        assert_eq!(providers(&config, InstanceKind::Cpu, Platform::Linux), expected);
    }

    #[test]
    fn tensorrt_before_cuda_with_triton_option_names() {
        let trt = accelerator(
            "tensorrt",
            &[
                ("precision_mode", "FP16"),
                ("max_workspace_size_bytes", "1073741824"),
                ("trt_engine_cache_path", ""),
            ],
        );
        let cuda = accelerator("cuda", &[("cudnn_conv_use_max_workspace", "1")]);
        let config = config(vec![trt, cuda], &[("cudnn_conv_algo_search", "1"), ("gpu_mem_limit", "1000")]);
        assert_eq!(
            providers(&config, InstanceKind::Gpu, Platform::Linux),
            vec![
                ProviderSetup {
                    provider: Provider::TensorRt,
                    options: options(&[
                        ("device_id", "1"),
                        ("trt_fp16_enable", "1"),
                        ("trt_max_workspace_size", "1073741824")
                    ]),
                },
                ProviderSetup {
                    provider: Provider::Cuda,
                    options: options(&[
                        ("cudnn_conv_algo_search", "HEURISTIC"),
                        ("cudnn_conv_use_max_workspace", "1"),
                        ("device_id", "1"),
                        ("gpu_mem_limit", "1000")
                    ]),
                },
            ]
        );
        // On a Mac, CUDA named explicitly is still requested (and reported missing there).
        let named: Vec<Provider> =
            providers(&config, InstanceKind::Gpu, Platform::MacOs).iter().map(|p| p.provider).collect();
        assert_eq!(named, vec![Provider::TensorRt, Provider::CoreMl, Provider::Cuda]);
    }

    #[test]
    fn triton_errors_for_bad_settings() {
        let err = |config: ModelConfig| plan(&config, InstanceKind::Gpu, 0, Platform::Linux).unwrap_err();
        assert_eq!(
            err(config(vec![accelerator("mystery", &[])], &[])),
            "unknown Execution Accelerator 'mystery' is requested"
        );
        assert_eq!(
            err(config(vec![accelerator("tensorrt", &[("colour", "red")])], &[])),
            "unknown parameter 'colour' is provided for TensorRT Execution Accelerator"
        );
        assert_eq!(
            err(config(vec![accelerator("tensorrt", &[("precision_mode", "FP8")])], &[])),
            "unsupported precision mode 'FP8' is requested"
        );
        assert_eq!(
            err(config(vec![accelerator("tensorrt", &[("trt_dla_enable", "maybe")])], &[])),
            "failed to convert 'maybe' to boolean"
        );
        assert_eq!(
            err(config(vec![], &[("arena_extend_strategy", "3")])),
            "unsupported arena_extend_strategy value '3' is requested"
        );
        let openvino = ExecutionAccelerators {
            cpu_execution_accelerator: vec![accelerator("openvino", &[])],
            ..Default::default()
        };
        let cpu = ModelConfig {
            optimization: Some(ModelOptimizationPolicy {
                execution_accelerators: Some(openvino),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            plan(&cpu, InstanceKind::Cpu, 0, Platform::Linux).unwrap_err(),
            "unknown Execution Accelerator 'openvino' is requested"
        );
        assert_eq!(
            err(config(vec![], &[("cpu_fallback", "perhaps")])),
            "failed to convert 'perhaps' to boolean"
        );
    }

    #[test]
    fn cpu_fallback_is_a_model_parameter() {
        let fallback = |value: &str| {
            plan(&config(vec![], &[("cpu_fallback", value)]), InstanceKind::Gpu, 0, Platform::Linux)
                .unwrap()
                .cpu_fallback
        };
        assert!(fallback("true"));
        assert!(!fallback("off"));
        assert!(!plan(&ModelConfig::default(), InstanceKind::Gpu, 0, Platform::Linux).unwrap().cpu_fallback);
    }
}
