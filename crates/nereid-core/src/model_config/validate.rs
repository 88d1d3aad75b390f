//! Triton's structural checks, with Triton's messages (model_config_utils.cc
//! `ValidateModelConfig`, `ValidateModelIOConfig`, `ValidateInstanceGroup`).

use std::collections::{HashMap, HashSet};

use nereid_proto::inference::model_config::SchedulingChoice;
use nereid_proto::inference::model_input::Format;
use nereid_proto::inference::model_instance_group::Kind as InstanceKind;
use nereid_proto::inference::model_metrics::metric_control::MetricOptions;
use nereid_proto::inference::model_queue_policy::TimeoutAction;
use nereid_proto::inference::model_sequence_batching::control::Kind as ControlKind;
use nereid_proto::inference::model_sequence_batching::StrategyChoice;
use nereid_proto::inference::{
    DataType, ModelConfig, ModelDynamicBatching, ModelEnsembling, ModelMetrics, ModelSequenceBatching,
    ModelTensorReshape,
};

const ENSEMBLE: &str = "ensemble";
const TENSORRT: &str = "tensorrt_plan";
const WILDCARD: i64 = -1;
const KNOWN_BACKENDS: [&str; 4] = ["tensorflow", "tensorrt", "onnxruntime", "pytorch"];

/// `ValidateModelConfig`: everything but the inputs/outputs (which auto-complete may still
/// fill, see [`validate_io`]) and the instance groups (see [`validate_instance_groups`]).
pub fn validate(config: &ModelConfig) -> Result<(), String> {
    let name = &config.name;
    if name.is_empty() {
        return Err("model configuration must specify 'name'".into());
    }
    if config.backend.is_empty() && config.platform != ENSEMBLE {
        return Err(format!("unexpected platform type '{}' for {name}", config.platform));
    }
    if !config.backend.is_empty() && config.platform == ENSEMBLE {
        return Err(format!(
            "Ensemble model '{name}' must have platform type '{}' and empty backend type",
            config.platform
        ));
    }
    // A known backend must match its platform; unknown backends take any platform.
    if KNOWN_BACKENDS.contains(&config.backend.as_str())
        && platform_backend(&config.platform) != Some(config.backend.as_str())
    {
        return Err(format!(
            "unexpected 'platform' and 'backend' pair, got:{}, {}",
            config.platform, config.backend
        ));
    }
    if config.max_batch_size < 0 {
        return Err(format!("'max_batch_size' must be non-negative value for {name}"));
    }
    if config.version_policy.is_none() {
        return Err(format!("must specify 'version policy' for {name}"));
    }
    let response_cache = config.response_cache.is_some_and(|cache| cache.enable);
    match &config.scheduling_choice {
        Some(SchedulingChoice::DynamicBatching(batching)) => check_dynamic_batching(batching, config)?,
        Some(SchedulingChoice::SequenceBatching(batching)) => {
            if response_cache {
                return Err(format!(
                    "Response Cache does not currently support model {name} with sequence batching \
                     scheduler. Please disable the response cache."
                ));
            }
            check_sequence_batching(batching, config)?;
        }
        Some(SchedulingChoice::EnsembleScheduling(ensemble)) => check_ensemble(ensemble, config)?,
        None if config.platform == ENSEMBLE => {
            return Err(format!(
                "ensemble scheduling must be set for ensemble {name} whose platform is {ENSEMBLE}"
            ));
        }
        None => {}
    }
    if config.model_transaction_policy.is_some_and(|policy| policy.decoupled) && response_cache {
        return Err(format!(
            "Response Cache does not currently support model {name} with 'decoupled' transaction \
             policy. Please disable the response cache."
        ));
    }
    config.model_metrics.as_ref().map_or(Ok(()), check_metrics)
}

/// `ValidateModelIOConfig`: inputs, outputs, batch inputs and outputs; also rejects a tensor
/// name used twice, which Triton lets through and then keeps only one of.
pub fn validate_io(config: &ModelConfig) -> Result<(), String> {
    let for_model = |message: String| format!("{message} for {}", config.name);
    let mut names = HashSet::new();
    for io in &config.input {
        let prefix = "model input ";
        check_shape(prefix, &io.name, io.data_type(), &io.dims, io.reshape.as_ref(), config.max_batch_size)
            .map_err(for_model)?;
        if matches!(io.format(), Format::Nhwc | Format::Nchw) && io.dims.len() != 3 {
            return Err(for_model("model input NHWC/NCHW require 3 dims".into()));
        }
        check_tensorrt_only(config, io.is_shape_tensor, io.is_non_linear_format_io, io.dims.len(), "input")
            .map_err(for_model)?;
        if !names.insert(&io.name) {
            return Err(for_model(format!("{prefix}'{}' is specified more than once", io.name)));
        }
    }
    let mut names = HashSet::new();
    for io in &config.output {
        let prefix = "model output ";
        check_shape(prefix, &io.name, io.data_type(), &io.dims, io.reshape.as_ref(), config.max_batch_size)
            .map_err(for_model)?;
        check_tensorrt_only(config, io.is_shape_tensor, io.is_non_linear_format_io, io.dims.len(), "output")
            .map_err(for_model)?;
        if !names.insert(&io.name) {
            return Err(for_model(format!("{prefix}'{}' is specified more than once", io.name)));
        }
    }
    check_batch_io(config).map_err(for_model)
}

/// `ValidateInstanceGroup`, after [`super::resolve_instance_kinds`] has run.
pub fn validate_instance_groups(config: &ModelConfig, gpu_count: usize) -> Result<(), String> {
    if matches!(config.scheduling_choice, Some(SchedulingChoice::EnsembleScheduling(_))) {
        return Ok(());
    }
    let model = &config.name;
    if config.instance_group.is_empty() {
        return Err(format!("must specify one or more 'instance group's for {model}"));
    }
    for group in &config.instance_group {
        let prefix = format!("instance group {} of model {model}", group.name);
        match group.kind() {
            InstanceKind::Model | InstanceKind::Cpu if !group.gpus.is_empty() => {
                let kind = group.kind().as_str_name();
                return Err(format!("{prefix} has kind {kind} but specifies one or more GPUs"));
            }
            InstanceKind::Gpu if group.gpus.is_empty() => {
                return Err(if gpu_count == 0 {
                    format!("{prefix} has kind KIND_GPU but no GPUs are available")
                } else {
                    format!("{prefix} has kind KIND_GPU but specifies no GPUs")
                });
            }
            InstanceKind::Gpu => {
                if let Some(gpu) = group.gpus.iter().find(|&&gpu| gpu < 0 || gpu as usize >= gpu_count) {
                    let available: Vec<String> = (0..gpu_count).map(|gpu| gpu.to_string()).collect();
                    return Err(format!(
                        "{prefix} specifies invalid or unsupported gpu id {gpu}. GPUs with at least \
                         the minimum required CUDA compute compatibility of 6.000000 are: {}",
                        available.join(", ")
                    ));
                }
            }
            InstanceKind::Auto => return Err(format!("{prefix} has unexpected kind KIND_AUTO")),
            _ => {}
        }
        if config.platform != TENSORRT && !group.profile.is_empty() {
            // Triton's message has no space before "specifies".
            return Err(format!(
                "{prefix} and platform {}specifies profile field which is only supported for \
                 TensorRT models",
                config.platform
            ));
        }
    }
    Ok(())
}

/// The backend a platform belongs to. Triton rejects `pytorch` with `torch_aoti` (both AOTI
/// and LibTorch use the backend name "pytorch"); we accept it, as its auto-complete sets it.
fn platform_backend(platform: &str) -> Option<&'static str> {
    match platform {
        "tensorflow_graphdef" | "tensorflow_savedmodel" => Some("tensorflow"),
        "tensorrt_plan" => Some("tensorrt"),
        "onnxruntime_onnx" => Some("onnxruntime"),
        "pytorch_libtorch" | "torch_aoti" => Some("pytorch"),
        _ => None,
    }
}

fn check_dynamic_batching(batching: &ModelDynamicBatching, config: &ModelConfig) -> Result<(), String> {
    let name = &config.name;
    for &size in &batching.preferred_batch_size {
        if size <= 0 {
            return Err(format!("dynamic batching preferred size must be positive for {name}"));
        }
        if size > config.max_batch_size {
            return Err(format!("dynamic batching preferred size must be <= max batch size for {name}"));
        }
    }
    let levels = batching.priority_levels;
    if levels != 0 {
        let in_range = |level: u64| (1..=levels).contains(&level);
        if !in_range(batching.default_priority_level) {
            return Err(format!("default priority level must be in range [1, {levels}] for {name}"));
        }
        if !batching.priority_queue_policy.keys().all(|&level| in_range(level)) {
            return Err(format!(
                "priority queue policy must have priority level in range [1, {levels}] for {name}"
            ));
        }
    }
    if batching.preserve_ordering {
        if levels > 1 {
            return Err(format!(
                "Only one priority level is allowed when 'preserve_ordering' is true for {name}"
            ));
        }
        let policies = batching.default_queue_policy.iter().chain(batching.priority_queue_policy.values());
        for policy in policies {
            if policy.default_timeout_microseconds != 0 && policy.timeout_action() == TimeoutAction::Delay {
                return Err(format!(
                    "Queue policy can not have DELAY as timeout action when 'preserve_ordering' is \
                     true for {name}"
                ));
            }
        }
    }
    Ok(())
}

fn check_sequence_batching(batching: &ModelSequenceBatching, config: &ModelConfig) -> Result<(), String> {
    let name = &config.name;
    let mut tensors = HashSet::new();
    for input in &batching.control_input {
        if input.name.is_empty() {
            return Err(format!("sequence batching control tensor must have a name for {name}"));
        }
        if !tensors.insert(&input.name) {
            return Err(format!(
                "sequence batching control tensor '{}' is specified for multiple control kinds for {name}",
                input.name
            ));
        }
    }
    let kinds = [
        ControlKind::ControlSequenceStart,
        ControlKind::ControlSequenceEnd,
        ControlKind::ControlSequenceReady,
        ControlKind::ControlSequenceCorrid,
    ];
    for kind in kinds {
        let mut controls = batching.control_input.iter().flat_map(|input| &input.control);
        let mut controls = controls.by_ref().filter(|control| control.kind() == kind);
        let Some(control) = controls.next() else {
            continue;
        };
        let kind = kind.as_str_name();
        if controls.next().is_some() {
            return Err(format!("sequence batching specifies multiple {kind} tensors for {name}"));
        }
        let values = [
            ("int32_false_true", control.int32_false_true.len()),
            ("fp32_false_true", control.fp32_false_true.len()),
            ("bool_false_true", control.bool_false_true.len()),
        ];
        let given: Vec<_> = values.into_iter().filter(|&(_, len)| len > 0).collect();
        if kind == ControlKind::ControlSequenceCorrid.as_str_name() {
            if !given.is_empty() {
                return Err(format!(
                    "sequence batching must not specify either 'int32_false_true', 'fp32_false_true' \
                     or 'bool_false_true' for {kind} for {name}"
                ));
            }
            use DataType::*;
            if !matches!(control.data_type(), TypeUint64 | TypeInt64 | TypeUint32 | TypeInt32 | TypeString) {
                return Err(format!(
                    "unexpected data type for control {kind} for {name}. Allowed data types are \
                     TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING"
                ));
            }
            continue;
        }
        match given[..] {
            [] => {
                return Err(format!(
                    "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or \
                     'bool_false_true' for {kind} for {name}"
                ))
            }
            [(field, len)] if len != 2 => {
                return Err(format!(
                    "sequence batching control '{field}' must have exactly 2 entries for {kind} for {name}"
                ))
            }
            [_] => {}
            _ => {
                return Err(format!(
                    "sequence batching specifies more than one from 'int32_false_true', \
                     'fp32_false_true' and 'bool_false_true' for {kind} for {name}"
                ))
            }
        }
    }
    match &batching.strategy_choice {
        Some(StrategyChoice::Oldest(oldest)) => {
            for &size in &oldest.preferred_batch_size {
                if size <= 0 {
                    return Err(format!(
                        "sequence batching preferred batch size must be positive for {name}"
                    ));
                }
                if size > config.max_batch_size {
                    return Err(format!(
                        "sequence batching preferred batch size must be <= max batch size for {name}"
                    ));
                }
            }
        }
        Some(StrategyChoice::Direct(direct)) if !(0.0..=1.0).contains(&direct.minimum_slot_utilization) => {
            return Err(format!(
                "sequence batching minimum slot utilization must be in range (0.0, 1.0] for {name}"
            ));
        }
        _ => {}
    }
    Ok(())
}

/// A node of an ensemble's data flow: linked to the tensors its producing step reads.
#[derive(Default)]
struct EnsembleTensor<'a> {
    name: &'a str,
    written: bool,
    ready: bool,
    prev: Vec<usize>,
    next: Vec<usize>,
}

/// `ValidateEnsembleSchedulingConfig`: every step is wired and data flows from the ensemble's
/// inputs to all of its outputs with no tensor left unused.
fn check_ensemble<'a>(ensemble: &'a ModelEnsembling, config: &ModelConfig) -> Result<(), String> {
    let name = &config.name;
    if config.platform != ENSEMBLE {
        return Err(format!(
            "ensemble scheduling cannot be set for model '{name}' whose platform is not {ENSEMBLE}"
        ));
    }
    if !config.instance_group.is_empty() {
        return Err(format!("instance group should not be specified for ensemble '{name}'"));
    }
    if config.optimization.is_some() {
        return Err(format!("optimization should not be specified for ensemble '{name}'"));
    }
    if !config.model_warmup.is_empty() {
        return Err(format!("model_warmup can not be specified for ensemble '{name}'"));
    }
    if ensemble.step.is_empty() {
        return Err(format!("must specify 'step' for ensemble '{name}'"));
    }

    let mut tensors: Vec<EnsembleTensor> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut node = |tensors: &mut Vec<EnsembleTensor<'a>>, tensor: &'a str| {
        *index.entry(tensor).or_insert_with(|| {
            tensors.push(EnsembleTensor { name: tensor, ..Default::default() });
            tensors.len() - 1
        })
    };
    for (step_index, step) in ensemble.step.iter().enumerate() {
        let at = format!("step {step_index} of ensemble '{name}'");
        for (field, empty) in [
            ("model_name", step.model_name.is_empty()),
            ("input_map", step.input_map.is_empty()),
            ("output_map", step.output_map.is_empty()),
        ] {
            if empty {
                return Err(format!("must specify '{field}' in {at}"));
            }
        }
        let mut written = Vec::new();
        for tensor in step.output_map.values() {
            let id = node(&mut tensors, tensor);
            if tensors[id].written {
                return Err(format!(
                    "ensemble tensor '{tensor}' can appear in an output map only once for ensemble \
                     '{name}' step {step_index}"
                ));
            }
            tensors[id].written = true;
            written.push(id);
        }
        for tensor in step.input_map.values() {
            let id = node(&mut tensors, tensor);
            for &output in &written {
                tensors[output].prev.push(id);
                tensors[id].next.push(output);
            }
        }
    }

    let mut queue = Vec::new();
    for input in &config.input {
        let Some(&id) = index.get(input.name.as_str()) else {
            return Err(format!("ensemble input '{}' for ensemble {name}' is not used", input.name));
        };
        tensors[id].ready = true;
        queue.push(id);
    }
    while let Some(id) = queue.pop() {
        for next in tensors[id].next.clone() {
            if !tensors[next].ready && tensors[next].prev.iter().all(|&prev| tensors[prev].ready) {
                tensors[next].ready = true;
                queue.push(next);
            }
        }
    }
    let mut outputs = HashSet::new();
    for output in &config.output {
        let Some(&id) = index.get(output.name.as_str()) else {
            return Err(format!("ensemble output '{}' for ensemble {name}' is not used", output.name));
        };
        if !tensors[id].ready {
            // Follow not-ready producers back to the first one that is not connected.
            let mut source = id;
            let mut seen = HashSet::new();
            while let Some(&prev) =
                tensors[source].prev.iter().find(|&&p| !tensors[p].ready && !seen.contains(&p))
            {
                seen.insert(prev);
                source = prev;
            }
            let mut message = format!("output '{}' for ensemble '{name}' is not written", output.name);
            if source != id {
                message += &format!(
                    ": at least one of its depending tensors, '{}', is not connected",
                    tensors[source].name
                );
            }
            return Err(message);
        }
        outputs.insert(id);
    }
    match tensors.iter().enumerate().find(|(id, t)| !outputs.contains(id) && (!t.ready || t.next.is_empty()))
    {
        Some((_, unused)) => Err(format!("ensemble tensor '{}' is unused in ensemble '{name}'", unused.name)),
        None => Ok(()),
    }
}

fn check_metrics(metrics: &ModelMetrics) -> Result<(), String> {
    for control in &metrics.metric_control {
        let Some(identifier) = &control.metric_identifier else {
            return Err("metric control must specify 'metric_identifier'".into());
        };
        if identifier.family.is_empty() {
            return Err("metric identifier must specify non-empty 'family'".into());
        }
        let Some(MetricOptions::HistogramOptions(histogram)) = &control.metric_options else {
            return Err("metric control must specify 'histogram_options'".into());
        };
        if histogram.buckets.is_empty() {
            return Err("histogram options must specify non-empty 'buckets'".into());
        }
    }
    Ok(())
}

/// `ValidateIOShape`.
fn check_shape(
    prefix: &str,
    name: &str,
    data_type: DataType,
    dims: &[i64],
    reshape: Option<&ModelTensorReshape>,
    max_batch_size: i32,
) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{prefix}must specify 'name'"));
    }
    let prefix = format!("{prefix}'{name}' ");
    if data_type == DataType::TypeInvalid {
        return Err(format!("{prefix}must specify 'data_type'"));
    }
    if dims.is_empty() {
        return Err(format!("{prefix}must specify 'dims'"));
    }
    let valid = |dim: &i64| *dim >= 1 || *dim == WILDCARD;
    if reshape.is_some_and(|reshape| reshape.shape.is_empty()) && max_batch_size == 0 {
        return Err(format!(
            "{prefix}cannot have empty reshape for non-batching model as scalar tensors are not supported"
        ));
    }
    if !dims.iter().all(valid) {
        return Err(format!(
            "{prefix}dimension must be integer >= 1, or -1 to indicate a variable-size dimension"
        ));
    }
    let Some(reshape) = reshape else {
        return Ok(());
    };
    if !reshape.shape.iter().all(valid) {
        return Err(format!(
            "{prefix}reshape dimensions must be integer >= 1, or -1 to indicate a variable-size dimension"
        ));
    }
    let (dims_size, reshape_size) = (element_count(dims), element_count(&reshape.shape));
    // An empty reshape (a scalar) matches dims of one element.
    if dims_size != reshape_size && (reshape_size != 0 || dims_size != 1) {
        return Err(format!("{prefix}has different size for dims and reshape"));
    }
    if dims_size == WILDCARD {
        // Each stretch between variable-size dimensions must hold the same element count.
        let stretches = |shape: &[i64]| -> Vec<i64> {
            shape.split(|&dim| dim == WILDCARD).map(|stretch| stretch.iter().product()).collect()
        };
        let (dims_stretches, reshape_stretches) = (stretches(dims), stretches(&reshape.shape));
        if dims_stretches.len() != reshape_stretches.len() {
            return Err(format!(
                "{prefix}has different number of variable-size dimensions for dims and reshape"
            ));
        }
        if dims_stretches != reshape_stretches {
            return Err(format!("{prefix}has different size for dims and reshape"));
        }
    }
    Ok(())
}

/// Triton's `GetElementCount`: -1 with any variable-size dimension, 0 for no dimensions.
fn element_count(shape: &[i64]) -> i64 {
    if shape.contains(&WILDCARD) {
        WILDCARD
    } else if shape.is_empty() {
        0
    } else {
        shape.iter().product()
    }
}

/// Shape tensors and non-linear formats are TensorRT features.
fn check_tensorrt_only(
    config: &ModelConfig,
    is_shape_tensor: bool,
    is_non_linear: bool,
    dim_count: usize,
    io: &str,
) -> Result<(), String> {
    if config.platform != TENSORRT && is_shape_tensor {
        return Err("shape tensors are only supported for TensorRT platform".into());
    }
    if is_non_linear && config.platform != TENSORRT {
        return Err("Non-linear IO format is only supported for the TensorRT platform".into());
    }
    if is_non_linear && dim_count != 3 {
        return Err(format!("Non-linear IO format {io} requires 3 dims"));
    }
    Ok(())
}

/// `ValidateBatchIO`.
fn check_batch_io(config: &ModelConfig) -> Result<(), String> {
    let inputs: HashSet<&str> = config.input.iter().map(|io| io.name.as_str()).collect();
    let outputs: HashSet<&str> = config.output.iter().map(|io| io.name.as_str()).collect();
    let check_sources = |sources: &[String]| match sources.iter().find(|s| !inputs.contains(s.as_str())) {
        Some(source) => Err(format!("unknown source input name '{source}'")),
        None => Ok(()),
    };
    for batch_input in &config.batch_input {
        if batch_input.source_input.len() != 1 {
            return Err(format!(
                "batch input kind '{}' expects 1 source input, got {}",
                batch_input.kind().as_str_name(),
                batch_input.source_input.len()
            ));
        }
        if !matches!(batch_input.data_type(), DataType::TypeInt32 | DataType::TypeFp32) {
            return Err("batch input data type must be TYPE_INT32 or TYPE_FP32".into());
        }
        check_sources(&batch_input.source_input)?;
    }
    for batch_output in &config.batch_output {
        if batch_output.source_input.len() != 1 {
            return Err(format!(
                "batch output kind '{}' expects 1 source input, got {}",
                batch_output.kind().as_str_name(),
                batch_output.source_input.len()
            ));
        }
        check_sources(&batch_output.source_input)?;
        let mut targets = HashSet::new();
        for target in &batch_output.target_name {
            if !outputs.contains(target.as_str()) {
                return Err(format!("unknown target output name '{target}'"));
            }
            if !targets.insert(target) {
                return Err(format!("target output name '{target}' can only be specified once"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_config::{fill_defaults, parse, resolve_instance_kinds};
    use std::path::Path;

    const IO: &str = r#"
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
"#;

    fn config(text: &str) -> ModelConfig {
        let mut config = parse(text, Path::new("config.pbtxt")).unwrap();
        fill_defaults(&mut config, "m");
        config
    }

    fn error(text: &str) -> String {
        let config = config(text);
        validate(&config).and_then(|()| validate_io(&config)).unwrap_err()
    }

    #[test]
    fn accepts_a_plain_model() {
        let mut model =
            config(&format!("backend: \"onnxruntime\" max_batch_size: 8 dynamic_batching {{ }} {IO}"));
        validate(&model).unwrap();
        validate_io(&model).unwrap();
        resolve_instance_kinds(&mut model, 0);
        validate_instance_groups(&model, 0).unwrap();
    }

    #[test]
    fn platform_and_backend() {
        assert_eq!(error("platform: \"custom\""), "unexpected platform type 'custom' for m");
        assert_eq!(
            error("platform: \"ensemble\" backend: \"x\""),
            "Ensemble model 'm' must have platform type 'ensemble' and empty backend type"
        );
        assert_eq!(
            error("platform: \"tensorrt_plan\" backend: \"onnxruntime\""),
            "unexpected 'platform' and 'backend' pair, got:tensorrt_plan, onnxruntime"
        );
        assert_eq!(
            error("platform: \"ensemble\""),
            "ensemble scheduling must be set for ensemble m whose platform is ensemble"
        );
        // Backends Triton does not know take any platform.
        validate(&config("backend: \"identity\" platform: \"whatever\"")).unwrap();
    }

    #[test]
    fn batch_sizes() {
        let onnx = "backend: \"onnxruntime\"";
        assert_eq!(
            error(&format!("{onnx} max_batch_size: -1")),
            "'max_batch_size' must be non-negative value for m"
        );
        assert_eq!(
            error(&format!("{onnx} max_batch_size: 4 dynamic_batching {{ preferred_batch_size: [ 8 ] }}")),
            "dynamic batching preferred size must be <= max batch size for m"
        );
        assert_eq!(
            error(&format!("{onnx} max_batch_size: 4 dynamic_batching {{ preferred_batch_size: [ 0 ] }}")),
            "dynamic batching preferred size must be positive for m"
        );
        assert_eq!(
            error(&format!("{onnx} max_batch_size: 4 dynamic_batching {{ priority_levels: 2 }}")),
            "default priority level must be in range [1, 2] for m"
        );
        assert_eq!(
            error(&format!(
                "{onnx} max_batch_size: 4 dynamic_batching {{ preserve_ordering: true
                   default_queue_policy {{ timeout_action: DELAY default_timeout_microseconds: 10 }} }}"
            )),
            "Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true for m"
        );
        assert_eq!(
            error(&format!(
                "{onnx} max_batch_size: 4 sequence_batching {{ oldest {{ preferred_batch_size: [ 5 ] }} }}"
            )),
            "sequence batching preferred batch size must be <= max batch size for m"
        );
    }

    #[test]
    fn sequence_controls() {
        let with =
            |controls: &str| error(&format!("backend: \"onnxruntime\" sequence_batching {{ {controls} }}"));
        assert_eq!(
            with("control_input [ { name: \"S\" control [ { kind: CONTROL_SEQUENCE_START } ] } ]"),
            "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or \
             'bool_false_true' for CONTROL_SEQUENCE_START for m"
        );
        assert_eq!(
            with("control_input [ { name: \"S\" control [ { int32_false_true: [ 1 ] } ] } ]"),
            "sequence batching control 'int32_false_true' must have exactly 2 entries for \
             CONTROL_SEQUENCE_START for m"
        );
        assert_eq!(
            with(
                "control_input [ { name: \"S\" control [ { int32_false_true: [ 0, 1 ] } ] },
                                  { name: \"T\" control [ { bool_false_true: [ false, true ] } ] } ]"
            ),
            "sequence batching specifies multiple CONTROL_SEQUENCE_START tensors for m"
        );
        assert_eq!(
            with("control_input [ { name: \"C\" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32 } ] } ]"),
            "unexpected data type for control CONTROL_SEQUENCE_CORRID for m. Allowed data types are \
             TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING"
        );
        assert_eq!(
            with("control_input [ { name: \"S\" }, { name: \"S\" } ]"),
            "sequence batching control tensor 'S' is specified for multiple control kinds for m"
        );
        assert_eq!(
            with("direct { minimum_slot_utilization: 1.5 }"),
            "sequence batching minimum slot utilization must be in range (0.0, 1.0] for m"
        );
    }

    #[test]
    fn inputs_and_outputs() {
        let io = |input: &str| error(&format!("backend: \"onnxruntime\" input [ {{ {input} }} ]"));
        assert_eq!(io("data_type: TYPE_FP32 dims: [ 1 ]"), "model input must specify 'name' for m");
        assert_eq!(io("name: \"x\" dims: [ 1 ]"), "model input 'x' must specify 'data_type' for m");
        assert_eq!(io("name: \"x\" data_type: TYPE_FP32"), "model input 'x' must specify 'dims' for m");
        assert_eq!(
            io("name: \"x\" data_type: TYPE_FP32 dims: [ 0 ]"),
            "model input 'x' dimension must be integer >= 1, or -1 to indicate a variable-size dimension for m"
        );
        assert_eq!(
            io("name: \"x\" data_type: TYPE_FP32 dims: [ -2 ]"),
            "model input 'x' dimension must be integer >= 1, or -1 to indicate a variable-size dimension for m"
        );
        assert_eq!(
            io("name: \"x\" data_type: TYPE_FP32 dims: [ 4 ] reshape { shape: [ 3 ] }"),
            "model input 'x' has different size for dims and reshape for m"
        );
        assert_eq!(
            io("name: \"x\" data_type: TYPE_FP32 dims: [ 2, -1 ] reshape { shape: [ -1, -1 ] }"),
            "model input 'x' has different number of variable-size dimensions for dims and reshape for m"
        );
        assert_eq!(
            io("name: \"x\" data_type: TYPE_FP32 dims: [ 1 ] reshape { }"),
            "model input 'x' cannot have empty reshape for non-batching model as scalar tensors are not \
             supported for m"
        );
        assert_eq!(
            io("name: \"x\" data_type: TYPE_FP32 dims: [ 2 ] format: FORMAT_NCHW"),
            "model input NHWC/NCHW require 3 dims for m"
        );
        assert_eq!(
            io("name: \"x\" data_type: TYPE_INT64 dims: [ 1 ] is_shape_tensor: true"),
            "shape tensors are only supported for TensorRT platform for m"
        );
        // Valid reshapes: scalar from [1], and equal stretches around variable dimensions.
        let ok = |input: &str| {
            let model =
                config(&format!("backend: \"onnxruntime\" max_batch_size: 2 input [ {{ {input} }} ]"));
            validate_io(&model).unwrap();
        };
        ok("name: \"x\" data_type: TYPE_FP32 dims: [ 1 ] reshape { }");
        ok("name: \"x\" data_type: TYPE_FP32 dims: [ 2, 4, -1, 6 ] reshape { shape: [ 8, -1, 1, 6 ] }");

        assert_eq!(
            error(&format!("backend: \"onnxruntime\" {IO} output [ {{ name: \"OUTPUT0\" data_type: TYPE_FP32 dims: [ 1 ] }} ]")),
            "model output 'OUTPUT0' is specified more than once for m"
        );
        assert_eq!(
            error(&format!(
                "backend: \"onnxruntime\" {IO} batch_input [ {{ kind: BATCH_ELEMENT_COUNT target_name: \"B\"
                   data_type: TYPE_FP32 source_input: \"nope\" }} ]"
            )),
            "unknown source input name 'nope' for m"
        );
    }

    #[test]
    fn ensembles() {
        let ensemble = |steps: &str| {
            error(&format!(
                r#"platform: "ensemble"
                input [ {{ name: "IN" data_type: TYPE_FP32 dims: [ 1 ] }} ]
                output [ {{ name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] }} ]
                ensemble_scheduling {{ {steps} }}"#
            ))
        };
        let step = |model: &str, input: &str, output: &str| {
            format!(
                r#"step [ {{ model_name: "{model}" model_version: -1
                    input_map {{ key: "x" value: "{input}" }} output_map {{ key: "y" value: "{output}" }} }} ]"#
            )
        };
        let good = format!("{} {}", step("a", "IN", "mid"), step("b", "mid", "OUT"));
        let model = config(&format!(
            r#"platform: "ensemble"
            input [ {{ name: "IN" data_type: TYPE_FP32 dims: [ 1 ] }} ]
            output [ {{ name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] }} ]
            ensemble_scheduling {{ {good} }}"#
        ));
        validate(&model).unwrap();
        validate_instance_groups(&model, 0).unwrap();

        assert_eq!(ensemble(""), "must specify 'step' for ensemble 'm'");
        assert_eq!(
            ensemble("step [ { model_name: \"a\" } ]"),
            "must specify 'input_map' in step 0 of ensemble 'm'"
        );
        assert_eq!(ensemble(&step("a", "other", "OUT")), "ensemble input 'IN' for ensemble m' is not used");
        assert_eq!(
            ensemble(&format!("{} {}", step("a", "IN", "mid"), step("b", "nowhere", "OUT"))),
            "output 'OUT' for ensemble 'm' is not written: at least one of its depending tensors, \
             'nowhere', is not connected"
        );
        assert_eq!(
            ensemble(&format!("{} {}", step("a", "IN", "OUT"), step("b", "IN", "OUT"))),
            "ensemble tensor 'OUT' can appear in an output map only once for ensemble 'm' step 1"
        );
        assert_eq!(
            ensemble(&format!("{} {}", step("a", "IN", "OUT"), step("b", "IN", "spare"))),
            "ensemble tensor 'spare' is unused in ensemble 'm'"
        );
        assert_eq!(
            error("backend: \"onnxruntime\" ensemble_scheduling { }"),
            "ensemble scheduling cannot be set for model 'm' whose platform is not ensemble"
        );
    }

    #[test]
    fn instance_groups() {
        let groups = |text: &str, gpus: usize| {
            let mut model = config(&format!("backend: \"onnxruntime\" {text}"));
            resolve_instance_kinds(&mut model, gpus);
            validate_instance_groups(&model, gpus).unwrap_err()
        };
        assert_eq!(
            groups("instance_group [ { kind: KIND_GPU } ]", 0),
            "instance group m_0 of model m has kind KIND_GPU but no GPUs are available"
        );
        assert_eq!(
            groups("instance_group [ { kind: KIND_CPU gpus: [ 0 ] } ]", 1),
            "instance group m_0 of model m has kind KIND_CPU but specifies one or more GPUs"
        );
        assert_eq!(
            groups("instance_group [ { kind: KIND_GPU gpus: [ 2 ] } ]", 2),
            "instance group m_0 of model m specifies invalid or unsupported gpu id 2. GPUs with at least \
             the minimum required CUDA compute compatibility of 6.000000 are: 0, 1"
        );
        assert_eq!(
            groups("instance_group [ { kind: KIND_CPU profile: \"0\" } ]", 0),
            "instance group m_0 of model m and platform onnxruntime_onnxspecifies profile field which is \
             only supported for TensorRT models"
        );
        let model = config("backend: \"onnxruntime\"");
        assert_eq!(
            validate_instance_groups(&model, 0).unwrap_err(),
            "instance group m of model m has unexpected kind KIND_AUTO"
        );
    }

    #[test]
    fn response_cache_and_metrics() {
        assert_eq!(
            error("backend: \"onnxruntime\" model_transaction_policy { decoupled: true } response_cache { enable: true }"),
            "Response Cache does not currently support model m with 'decoupled' transaction policy. \
             Please disable the response cache."
        );
        assert_eq!(
            error("backend: \"onnxruntime\" model_metrics { metric_control [ { metric_identifier { family: \"f\" } } ] }"),
            "metric control must specify 'histogram_options'"
        );
    }
}
