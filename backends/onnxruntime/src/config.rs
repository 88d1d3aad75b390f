//! The model config against the model itself: auto-complete from the model's inputs and
//! outputs, and the checks (names, datatypes, shapes) that turn the configured inputs and
//! outputs into what execution needs.

use std::collections::BTreeSet;

use nereid_core::tensor::DataType;
use nereid_proto::inference::model_config::SchedulingChoice;
use nereid_proto::inference::{ModelConfig, ModelInput, ModelOutput, ModelTensorReshape};

use crate::batch;
use crate::datatype::{self, config_name};

/// A model input or output as ONNX Runtime reports it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OnnxIo {
    pub name: String,
    /// `Err` describes the ONNX type when Triton has no datatype for it (maps, sequences,
    /// complex...); that only matters if the config uses the tensor.
    pub datatype: Result<DataType, String>,
    /// -1 for a dynamic dimension.
    pub dims: Vec<i64>,
}

/// What execution needs of a configured input or output.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IoSpec {
    pub name: String,
    pub datatype: DataType,
    /// Dims as clients see them, without the batch dimension.
    pub dims: Vec<i64>,
    /// Dims as the model sees them where they differ: the config's `reshape`, or `[]` for a
    /// scalar of a non-batching model configured as `dims: [1]` (as auto-complete writes it).
    pub reshape: Option<Vec<i64>>,
    pub optional: bool,
}

impl IoSpec {
    /// Client dims → model dims (both without the batch dimension).
    pub fn model_dims(&self, dims: &[i64]) -> Option<Vec<i64>> {
        match &self.reshape {
            Some(reshape) => batch::reshape(dims, &self.dims, reshape),
            None => Some(dims.to_vec()),
        }
    }

    /// Model dims → client dims (both without the batch dimension).
    pub fn client_dims(&self, dims: &[i64]) -> Option<Vec<i64>> {
        match &self.reshape {
            Some(reshape) => batch::reshape(dims, reshape, &self.dims),
            None => Some(dims.to_vec()),
        }
    }
}

/// Like Triton, auto-complete leaves a config that lists both inputs and outputs alone.
pub(crate) fn needs_auto_complete(config: &ModelConfig) -> bool {
    (config.input.is_empty() && config.batch_input.is_empty()) || config.output.is_empty()
}

/// Fills in missing inputs or outputs from the model, and `max_batch_size` (with a dynamic
/// batcher) when every model input and output has a dynamic first dimension.
pub(crate) fn auto_complete(
    config: &mut ModelConfig,
    inputs: &[OnnxIo],
    outputs: &[OnnxIo],
    default_max_batch_size: i32,
) -> Result<(), String> {
    let can_batch = inputs.iter().chain(outputs).all(|io| io.dims.first() == Some(&-1));
    if can_batch {
        if config.max_batch_size == 0 {
            config.max_batch_size = default_max_batch_size.max(0);
            log::warn!(
                "autofilled max_batch_size to {} for model '{}' since batching is supporrted but no \
                 max_batch_size is specified in model configuration. Must specify max_batch_size to utilize \
                 autofill with a larger max batch size",
                config.max_batch_size,
                config.name
            );
        }
        if config.max_batch_size > 1 && config.scheduling_choice.is_none() {
            config.scheduling_choice = Some(SchedulingChoice::DynamicBatching(Default::default()));
        }
    } else if config.max_batch_size != 0 {
        return Err(format!(
            "autofill failed for model '{}': model does not support batching while non-zero \
             max_batch_size is specified",
            config.name
        ));
    }
    let batching = config.max_batch_size > 0;
    let fill = |io: &OnnxIo| -> Result<(String, i32, Vec<i64>, Option<ModelTensorReshape>), String> {
        let datatype = io.datatype.as_ref().map_err(|onnx| {
            format!(
                "unable to autofill for '{}': tensor '{}' has type {onnx}, which Triton has no datatype for",
                config.name, io.name
            )
        })?;
        let dims = if batching { io.dims.get(1..).unwrap_or_default() } else { &io.dims[..] };
        // A scalar is dims [1]; with batching the model sees [batch] only, hence reshape [].
        let (dims, reshape) = match dims {
            [] => (vec![1], batching.then(ModelTensorReshape::default)),
            dims => (dims.to_vec(), None),
        };
        Ok((io.name.clone(), datatype.to_config(), dims, reshape))
    };
    if config.input.is_empty() && config.batch_input.is_empty() {
        config.input = inputs
            .iter()
            .map(|io| {
                let (name, data_type, dims, reshape) = fill(io)?;
                Ok(ModelInput { name, data_type, dims, reshape, ..Default::default() })
            })
            .collect::<Result<_, String>>()?;
    }
    if config.output.is_empty() {
        config.output = outputs
            .iter()
            .map(|io| {
                let (name, data_type, dims, reshape) = fill(io)?;
                Ok(ModelOutput { name, data_type, dims, reshape, ..Default::default() })
            })
            .collect::<Result<_, String>>()?;
    }
    Ok(())
}

/// A configured input or output, seen the same way for both.
struct Configured<'a> {
    name: &'a str,
    data_type: i32,
    dims: &'a [i64],
    reshape: Option<&'a [i64]>,
    optional: bool,
}

/// Triton's `ShapeToString`: `[-1,4]`.
fn shape_string(dims: &[i64]) -> String {
    let parts: Vec<String> = dims.iter().map(i64::to_string).collect();
    format!("[{}]", parts.join(","))
}

fn allowed_names(kind: &str, name: &str, model: &[&OnnxIo]) -> String {
    let allowed: BTreeSet<&str> = model.iter().map(|m| m.name.as_str()).collect();
    let allowed: Vec<&str> = allowed.into_iter().collect();
    format!("unexpected inference {kind} '{name}', allowed {kind}s are: {}", allowed.join(", "))
}

/// Checks the configured inputs against the model's (Triton's `ValidateInputs`): the count of
/// required inputs, then each input's name, datatype and shape; sequence controls too.
/// `initializers` are the model's overridable initializers, which optional inputs may feed.
pub(crate) fn input_specs(
    config: &ModelConfig,
    model: &[OnnxIo],
    initializers: &[OnnxIo],
) -> Result<Vec<IoSpec>, String> {
    let name = &config.name;
    let controls = control_inputs(config);
    let expected =
        config.input.iter().filter(|i| !i.optional).count() + config.batch_input.len() + controls.len();
    if expected != model.len() {
        return Err(format!(
            "unable to load model '{name}', configuration expects {expected} inputs, model provides {}",
            model.len()
        ));
    }
    let known: Vec<&OnnxIo> = model.iter().chain(initializers).collect();
    let mut specs = Vec::with_capacity(config.input.len() + controls.len());
    for input in &config.input {
        if input.optional && config.max_batch_size != 0 {
            return Err(format!(
                "unable to load model '{name}', optional input '{}' is not supported for models that support batching",
                input.name
            ));
        }
        let configured = Configured {
            name: &input.name,
            data_type: input.data_type,
            dims: &input.dims,
            reshape: input.reshape.as_ref().map(|r| &r.shape[..]),
            optional: input.optional,
        };
        specs.push(spec(config, "input", configured, &known)?);
    }
    for control in controls {
        specs.push(control_spec(config, control, model)?);
    }
    Ok(specs)
}

/// The sequence batcher's control inputs: (tensor name, config datatype).
fn control_inputs(config: &ModelConfig) -> Vec<(&str, i32)> {
    let controls = match &config.scheduling_choice {
        Some(SchedulingChoice::SequenceBatching(sequence)) => &sequence.control_input[..],
        _ => &[],
    };
    controls
        .iter()
        .filter_map(|input| {
            let control = input.control.first()?;
            let data_type = if !control.int32_false_true.is_empty() {
                DataType::Int32.to_config()
            } else if !control.fp32_false_true.is_empty() {
                DataType::Fp32.to_config()
            } else if !control.bool_false_true.is_empty() {
                DataType::Bool.to_config()
            } else {
                control.data_type // CONTROL_SEQUENCE_CORRID
            };
            Some((input.name.as_str(), data_type))
        })
        .collect()
}

/// Triton's `ValidateBooleanSequenceControl`: one value per sequence slot, so dims `[1]`.
fn control_spec(
    config: &ModelConfig,
    (tensor, data_type): (&str, i32),
    model: &[OnnxIo],
) -> Result<IoSpec, String> {
    let name = &config.name;
    let Some(io) = model.iter().find(|m| m.name == tensor) else {
        return Err(format!(
            "configuration specified sequence control '{tensor}', but model does not provide that input"
        ));
    };
    let batching = config.max_batch_size > 0;
    let dims = if batching { io.dims.get(1..).unwrap_or_default() } else { &io.dims[..] };
    if dims != [1] {
        return Err(format!(
            "unable to load model '{name}', sequence control '{tensor}' in model has dims {} but dims [1] is expected",
            shape_string(dims)
        ));
    }
    match (DataType::from_config(data_type), &io.datatype) {
        (Some(datatype), Ok(model_type)) if datatype == *model_type => {
            Ok(IoSpec { name: tensor.to_string(), datatype, dims: vec![1], reshape: None, optional: false })
        }
        (datatype, model_type) => Err(format!(
            "unable to load model '{name}', sequence control '{tensor}', the model expects data-type {} \
             but the model configuration specifies data-type {}",
            model_type.as_ref().map_or("UNDEFINED", |d| datatype::onnx_name(*d)),
            datatype.map_or("TYPE_INVALID", config_name)
        )),
    }
}

/// Checks the configured outputs against the model's (Triton's `ValidateOutputs`); the config
/// may list fewer.
pub(crate) fn output_specs(config: &ModelConfig, model: &[OnnxIo]) -> Result<Vec<IoSpec>, String> {
    let known: Vec<&OnnxIo> = model.iter().collect();
    config
        .output
        .iter()
        .map(|o| {
            let configured = Configured {
                name: &o.name,
                data_type: o.data_type,
                dims: &o.dims,
                reshape: o.reshape.as_ref().map(|r| &r.shape[..]),
                optional: false,
            };
            spec(config, "output", configured, &known)
        })
        .collect()
}

fn spec(config: &ModelConfig, kind: &str, c: Configured, model: &[&OnnxIo]) -> Result<IoSpec, String> {
    let name = &config.name;
    let Some(io) = model.iter().find(|m| m.name == c.name) else {
        return Err(allowed_names(kind, c.name, model));
    };
    let Some(datatype) = DataType::from_config(c.data_type) else {
        return Err(format!("unsupported datatype TYPE_INVALID for {kind} '{}' for model '{name}'", c.name));
    };
    if io.datatype != Ok(datatype) {
        let provided = io.datatype.as_ref().map_or("INVALID", |d| d.as_str());
        return Err(format!(
            "unable to load model '{name}', configuration expects datatype {} for {kind} '{}', model provides TYPE_{provided}",
            config_name(datatype),
            c.name
        ));
    }
    // A reshape is what the model sees, so it is what is compared.
    let dims = c.reshape.unwrap_or(c.dims);
    let batching = config.max_batch_size > 0;
    let mut reshape = c.reshape.map(<[i64]>::to_vec);
    if io.dims.is_empty() {
        if dims.iter().any(|&d| d != 1) {
            return Err(format!(
                "unable to load model '{name}', scalar tensor '{}', should only provide 1 in the model \
                 configuration when the model doesn't support batching. Model configuration provided: {}.",
                c.name,
                shape_string(dims)
            ));
        }
        // The model takes and gives a scalar where clients see the configured dims.
        if !batching {
            reshape = Some(Vec::new());
        }
    } else {
        compare_dims(name, c.name, &io.dims, dims, batching, kind == "output")?;
    }
    Ok(IoSpec { name: c.name.to_string(), datatype, dims: c.dims.to_vec(), reshape, optional: c.optional })
}

/// Triton's `CompareDimsSupported`: a model dimension of -1 accepts any configured one, except
/// for outputs (`exact`), whose dimensions must be the model's.
fn compare_dims(
    model_name: &str,
    tensor: &str,
    model: &[i64],
    dims: &[i64],
    batching: bool,
    exact: bool,
) -> Result<(), String> {
    let prefix = format!("model '{model_name}', tensor '{tensor}'");
    if batching && model.first() != Some(&-1) {
        return Err(format!(
            "{prefix}: for the model to support batching the shape should have at least 1 dimension and the \
             first dimension must be -1; but shape expected by the model is {}",
            shape_string(model)
        ));
    }
    let full: Vec<i64> = batching.then_some(-1).into_iter().chain(dims.iter().copied()).collect();
    let fits =
        model.len() == full.len() && model.iter().zip(&full).all(|(&m, &c)| (!exact && m == -1) || m == c);
    if fits {
        return Ok(());
    }
    let specified = if batching {
        format!(
            "{} dimensions (an initial batch dimension because max_batch_size > 0 followed by the explicit \
             tensor shape, making complete shape {})",
            full.len(),
            shape_string(&full)
        )
    } else {
        format!("{} dimensions (shape {})", full.len(), shape_string(&full))
    };
    Err(format!(
        "{prefix}: the model expects {} dimensions (shape {}) but the model configuration specifies {specified}",
        model.len(),
        shape_string(model)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(name: &str, datatype: DataType, dims: &[i64]) -> OnnxIo {
        OnnxIo { name: name.into(), datatype: Ok(datatype), dims: dims.to_vec() }
    }

    fn named(name: &str) -> ModelConfig {
        ModelConfig { name: name.into(), ..Default::default() }
    }

    #[test]
    fn batching_model_gets_default_max_batch_size_and_stripped_dims() {
        let mut config = named("m");
        let inputs = [io("IN", DataType::Fp32, &[-1, 3]), io("S", DataType::Bytes, &[-1])];
        let outputs = [io("OUT", DataType::Int64, &[-1, 3, -1])];
        auto_complete(&mut config, &inputs, &outputs, 4).unwrap();
        assert_eq!(config.max_batch_size, 4);
        assert!(matches!(config.scheduling_choice, Some(SchedulingChoice::DynamicBatching(_))));
        assert_eq!(config.input[0].dims, vec![3]);
        assert_eq!(config.input[0].data_type, DataType::Fp32.to_config());
        assert_eq!(config.input[1].dims, vec![1]);
        assert_eq!(config.input[1].reshape, Some(ModelTensorReshape { shape: vec![] }));
        assert_eq!(config.output[0].dims, vec![3, -1]);
        // What auto-complete writes passes the load checks.
        assert!(input_specs(&config, &inputs, &[]).is_ok());
        assert!(output_specs(&config, &outputs).is_ok());
    }

    #[test]
    fn fixed_model_keeps_full_dims_and_no_batching() {
        let mut config = named("m");
        let inputs = [io("IN", DataType::Fp16, &[2, 3]), io("K", DataType::Int32, &[])];
        auto_complete(&mut config, &inputs, &[io("OUT", DataType::Fp16, &[-1, 3])], 4).unwrap();
        assert_eq!(config.max_batch_size, 0);
        assert!(config.scheduling_choice.is_none());
        assert_eq!(config.input[0].dims, vec![2, 3]);
        assert_eq!((config.input[1].dims.clone(), config.input[1].reshape.clone()), (vec![1], None));
        assert_eq!(config.output[0].dims, vec![-1, 3]);
        let specs = input_specs(&config, &inputs, &[]).unwrap();
        assert_eq!(specs[1].reshape, Some(vec![]), "scalar fed as shape []");
        assert_eq!(specs[1].client_dims(&[]), Some(vec![1]));
    }

    #[test]
    fn explicit_settings_are_kept_or_rejected() {
        let inputs = [io("IN", DataType::Fp32, &[-1, 3])];
        let mut config = ModelConfig { max_batch_size: 1, ..named("m") };
        auto_complete(&mut config, &inputs, &inputs, 4).unwrap();
        assert_eq!(config.max_batch_size, 1);
        assert!(config.scheduling_choice.is_none(), "no dynamic batcher for max_batch_size 1");

        let mut config = ModelConfig { max_batch_size: 8, ..named("m") };
        let err = auto_complete(&mut config, &[io("IN", DataType::Fp32, &[3])], &inputs, 4).unwrap_err();
        assert_eq!(
            err,
            "autofill failed for model 'm': model does not support batching while non-zero max_batch_size is specified"
        );
        // A scalar cannot batch either.
        let mut config = ModelConfig { max_batch_size: 2, ..named("m") };
        assert!(auto_complete(&mut config, &[io("IN", DataType::Fp32, &[])], &inputs, 4).is_err());

        let mut config = named("m");
        let map = OnnxIo { name: "M".into(), datatype: Err("Map<Int64, Float32>".into()), dims: vec![] };
        assert!(auto_complete(&mut config, &inputs, &[map], 4).unwrap_err().contains("Map<Int64, Float32>"));
    }

    #[test]
    fn complete_configs_are_left_alone() {
        let mut config = named("m");
        config.input.push(ModelInput { name: "IN".into(), ..Default::default() });
        assert!(needs_auto_complete(&config));
        config.output.push(ModelOutput { name: "OUT".into(), ..Default::default() });
        assert!(!needs_auto_complete(&config));
    }

    fn input(name: &str, data_type: DataType, dims: &[i64]) -> ModelInput {
        ModelInput {
            name: name.into(),
            data_type: data_type.to_config(),
            dims: dims.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn sequence_controls_are_model_inputs() {
        use nereid_proto::inference::model_sequence_batching::{Control, ControlInput};
        use nereid_proto::inference::ModelSequenceBatching;
        let control = Control { int32_false_true: vec![0, 1], ..Default::default() };
        let start = ControlInput { name: "START".into(), control: vec![control] };
        let sequence = ModelSequenceBatching { control_input: vec![start], ..Default::default() };
        let mut config = ModelConfig {
            max_batch_size: 8,
            scheduling_choice: Some(SchedulingChoice::SequenceBatching(sequence)),
            ..named("seq")
        };
        config.input.push(input("IN", DataType::Int32, &[1]));
        let mut model = vec![io("IN", DataType::Int32, &[-1, 1]), io("START", DataType::Int32, &[-1, 1])];
        let specs = input_specs(&config, &model, &[]).unwrap();
        assert_eq!((specs[1].name.as_str(), specs[1].dims.clone()), ("START", vec![1]));
        model[1].datatype = Ok(DataType::Fp32);
        assert_eq!(
            input_specs(&config, &model, &[]).unwrap_err(),
            "unable to load model 'seq', sequence control 'START', the model expects data-type FLOAT but the \
             model configuration specifies data-type TYPE_INT32"
        );
        model[1] = io("START", DataType::Int32, &[-1, 2]);
        assert_eq!(
            input_specs(&config, &model, &[]).unwrap_err(),
            "unable to load model 'seq', sequence control 'START' in model has dims [2] but dims [1] is expected"
        );
        config.scheduling_choice = None;
        assert_eq!(
            input_specs(&config, &model, &[]).unwrap_err(),
            "unable to load model 'seq', configuration expects 1 inputs, model provides 2"
        );
    }

    #[test]
    fn load_checks_name_datatype_and_shape_with_triton_texts() {
        let model = [io("IN", DataType::Int32, &[-1, 4]), io("B", DataType::Int32, &[-1, 4])];
        let mut config = ModelConfig { max_batch_size: 2, ..named("x") };
        let check = |config: &ModelConfig| input_specs(config, &model, &[]).unwrap_err();
        config.input = vec![input("IN", DataType::Fp32, &[4]), input("B", DataType::Int32, &[4])];
        assert_eq!(
            check(&config),
            "unable to load model 'x', configuration expects datatype TYPE_FP32 for input 'IN', model provides TYPE_INT32"
        );
        config.input[0] = input("IN", DataType::Int32, &[5]);
        assert_eq!(
            check(&config),
            "model 'x', tensor 'IN': the model expects 2 dimensions (shape [-1,4]) but the model configuration \
             specifies 2 dimensions (an initial batch dimension because max_batch_size > 0 followed by the \
             explicit tensor shape, making complete shape [-1,5])"
        );
        config.input[0] = input("IN", DataType::Int32, &[2, 2]);
        config.input[0].reshape = Some(ModelTensorReshape { shape: vec![4] });
        let spec = &input_specs(&config, &model, &[]).unwrap()[0];
        assert_eq!(spec.model_dims(&[2, 2]), Some(vec![4]));
        config.input[0].name = "OTHER".into();
        assert_eq!(check(&config), "unexpected inference input 'OTHER', allowed inputs are: B, IN");
        config.input.pop();
        assert_eq!(
            check(&config),
            "unable to load model 'x', configuration expects 1 inputs, model provides 2"
        );

        let output = |dims: &[i64]| ModelOutput {
            name: "IN".into(),
            data_type: DataType::Int32.to_config(),
            dims: dims.to_vec(),
            ..Default::default()
        };
        config.output = vec![ModelOutput { name: "NOPE".into(), ..output(&[4]) }];
        assert_eq!(
            output_specs(&config, &model).unwrap_err(),
            "unexpected inference output 'NOPE', allowed outputs are: B, IN"
        );
        config.output = vec![output(&[4])];
        assert!(output_specs(&config, &model).is_ok());
        // Outputs compare exactly: a fixed size where the model has a variable one is refused.
        let variable = [io("IN", DataType::Int32, &[-1, -1])];
        assert!(output_specs(&config, &variable)
            .unwrap_err()
            .contains("the model expects 2 dimensions (shape [-1,-1])"));
        assert!(input_specs(
            &ModelConfig { input: vec![input("IN", DataType::Int32, &[4])], ..config.clone() },
            &variable,
            &[]
        )
        .is_ok());
    }

    #[test]
    fn optional_inputs_feed_overridable_initializers_of_unbatched_models() {
        let model = [io("X", DataType::Fp32, &[3])];
        let initializers = [io("SCALE", DataType::Fp32, &[3])];
        let mut config = named("o");
        config.input = vec![input("X", DataType::Fp32, &[3]), input("SCALE", DataType::Fp32, &[3])];
        config.input[1].optional = true;
        let specs = input_specs(&config, &model, &initializers).unwrap();
        assert!(specs[1].optional);
        // Not optional, it counts as a model input the model does not have.
        config.input[1].optional = false;
        assert_eq!(
            input_specs(&config, &model, &initializers).unwrap_err(),
            "unable to load model 'o', configuration expects 2 inputs, model provides 1"
        );
        config.input[1].optional = true;
        config.max_batch_size = 4;
        let batched = [io("X", DataType::Fp32, &[-1, 3])];
        assert_eq!(
            input_specs(&config, &batched, &initializers).unwrap_err(),
            "unable to load model 'o', optional input 'SCALE' is not supported for models that support batching"
        );
    }

    #[test]
    fn scalars_take_dims_of_ones() {
        let model = [io("S", DataType::Int64, &[])];
        let mut config = named("s");
        config.input = vec![input("S", DataType::Int64, &[1, 1])];
        let spec = &input_specs(&config, &model, &[]).unwrap()[0];
        assert_eq!((spec.model_dims(&[1, 1]), spec.client_dims(&[])), (Some(vec![]), Some(vec![1, 1])));
        config.input = vec![input("S", DataType::Int64, &[2])];
        assert_eq!(
            input_specs(&config, &model, &[]).unwrap_err(),
            "unable to load model 's', scalar tensor 'S', should only provide 1 in the model configuration when \
             the model doesn't support batching. Model configuration provided: [2]."
        );
    }
}
