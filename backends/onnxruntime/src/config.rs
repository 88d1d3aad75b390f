//! The model config against the model itself: auto-complete from the model's inputs and
//! outputs, and the checks (names, datatypes, shapes) that turn the configured inputs and
//! outputs into what execution needs.

use nereid_core::tensor::DataType;
use nereid_proto::inference::model_config::SchedulingChoice;
use nereid_proto::inference::{ModelConfig, ModelInput, ModelOutput, ModelTensorReshape};

use crate::batch;
use crate::datatype::config_name;

/// A model input or output as ONNX Runtime reports it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OnnxIo {
    pub name: String,
    /// `Err` holds the ONNX type when Triton has no datatype for it (maps, sequences, complex...);
    /// that only matters if the config uses the tensor.
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
                "autofilled max_batch_size to {} for model '{}' since batching is supported but no \
                 max_batch_size is specified in model configuration",
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

/// Checks the configured inputs, and the sequence batcher's control inputs, against the model's;
/// every model input must be one of them.
pub(crate) fn input_specs(config: &ModelConfig, model: &[OnnxIo]) -> Result<Vec<IoSpec>, String> {
    let inputs = config.input.iter().map(|i| Configured {
        name: &i.name,
        data_type: i.data_type,
        dims: &i.dims,
        reshape: i.reshape.as_ref().map(|r| &r.shape[..]),
        optional: i.optional,
    });
    let configured: Vec<Configured> = inputs.chain(control_inputs(config)).collect();
    if let Some(missing) = model.iter().find(|m| !configured.iter().any(|c| c.name == m.name)) {
        return Err(format!(
            "unable to load model '{}', model input '{}' is not in the configuration",
            config.name, missing.name
        ));
    }
    configured.into_iter().map(|c| spec(config, "input", c, model)).collect()
}

/// The sequence batcher's control inputs: one value per sequence slot, so dims `[1]`.
fn control_inputs(config: &ModelConfig) -> impl Iterator<Item = Configured<'_>> {
    let controls = match &config.scheduling_choice {
        Some(SchedulingChoice::SequenceBatching(sequence)) => &sequence.control_input[..],
        _ => &[],
    };
    controls.iter().filter_map(|input| {
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
        Some(Configured { name: &input.name, data_type, dims: &[1], reshape: None, optional: false })
    })
}

/// Checks the configured outputs against the model's; the config may list fewer.
pub(crate) fn output_specs(config: &ModelConfig, model: &[OnnxIo]) -> Result<Vec<IoSpec>, String> {
    let configured = config.output.iter().map(|o| Configured {
        name: &o.name,
        data_type: o.data_type,
        dims: &o.dims,
        reshape: o.reshape.as_ref().map(|r| &r.shape[..]),
        optional: false,
    });
    configured.map(|c| spec(config, "output", c, model)).collect()
}

fn spec(config: &ModelConfig, kind: &str, c: Configured, model: &[OnnxIo]) -> Result<IoSpec, String> {
    let name = &config.name;
    let Some(io) = model.iter().find(|m| m.name == c.name) else {
        let allowed: Vec<&str> = model.iter().map(|m| m.name.as_str()).collect();
        return Err(format!(
            "unable to load model '{name}', unexpected inference {kind} '{}', allowed {kind}s are: {}",
            c.name,
            allowed.join(", ")
        ));
    };
    let Some(datatype) = DataType::from_config(c.data_type) else {
        return Err(format!("unable to load model '{name}', {kind} '{}' has no valid data_type", c.name));
    };
    let provided = match &io.datatype {
        Ok(d) => config_name(*d).to_string(),
        Err(onnx) => onnx.clone(),
    };
    if io.datatype != Ok(datatype) {
        return Err(format!(
            "unable to load model '{name}', configuration expects datatype {} for {kind} '{}', model provides {provided}",
            config_name(datatype),
            c.name
        ));
    }
    let batching = config.max_batch_size > 0;
    let reshape = c
        .reshape
        .map(<[i64]>::to_vec)
        .or_else(|| (io.dims.is_empty() && !batching && c.dims == [1]).then(Vec::new));
    let model_dims = reshape.as_deref().unwrap_or(c.dims);
    let full: Vec<i64> = batching.then_some(-1).into_iter().chain(model_dims.iter().copied()).collect();
    let fits = full.len() == io.dims.len() && full.iter().zip(&io.dims).all(|(&c, &m)| m == -1 || m == c);
    if !fits {
        return Err(format!(
            "unable to load model '{name}', {kind} '{}' has shape {:?} in the model, but the configuration makes it {full:?}{}",
            c.name,
            io.dims,
            if batching { " (max_batch_size > 0 adds the leading batch dimension)" } else { "" }
        ));
    }
    Ok(IoSpec { name: c.name.to_string(), datatype, dims: c.dims.to_vec(), reshape, optional: c.optional })
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
        assert!(input_specs(&config, &inputs).is_ok());
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
        let specs = input_specs(&config, &inputs).unwrap();
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
        assert!(err.contains("model does not support batching"), "{err}");

        let mut config = named("m");
        let map = OnnxIo { name: "M".into(), datatype: Err("Map<int64, float32>".into()), dims: vec![] };
        assert!(auto_complete(&mut config, &inputs, &[map], 4).unwrap_err().contains("Map<int64, float32>"));
    }

    #[test]
    fn complete_configs_are_left_alone() {
        let mut config = named("m");
        config.input.push(ModelInput { name: "IN".into(), ..Default::default() });
        assert!(needs_auto_complete(&config));
        config.output.push(ModelOutput { name: "OUT".into(), ..Default::default() });
        assert!(!needs_auto_complete(&config));
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
        config.input.push(ModelInput {
            name: "IN".into(),
            data_type: DataType::Int32.to_config(),
            dims: vec![1],
            ..Default::default()
        });
        let mut model = vec![io("IN", DataType::Int32, &[-1, 1]), io("START", DataType::Int32, &[-1, 1])];
        let specs = input_specs(&config, &model).unwrap();
        assert_eq!((specs[1].name.as_str(), specs[1].dims.clone()), ("START", vec![1]));
        model[1].datatype = Ok(DataType::Fp32);
        assert!(input_specs(&config, &model).unwrap_err().contains("TYPE_INT32 for input 'START'"));
        config.scheduling_choice = None;
        assert!(input_specs(&config, &model).unwrap_err().contains("model input 'START' is not in"));
    }

    #[test]
    fn load_checks_name_datatype_and_shape() {
        let model = [io("IN", DataType::Int32, &[-1, 4])];
        let input = |data_type: DataType, dims: Vec<i64>| ModelInput {
            name: "IN".into(),
            data_type: data_type.to_config(),
            dims,
            ..Default::default()
        };
        let mut config = ModelConfig { max_batch_size: 2, ..named("x") };
        config.input = vec![input(DataType::Fp32, vec![4])];
        assert_eq!(
            input_specs(&config, &model).unwrap_err(),
            "unable to load model 'x', configuration expects datatype TYPE_FP32 for input 'IN', model provides TYPE_INT32"
        );
        config.input = vec![input(DataType::Int32, vec![5])];
        assert!(input_specs(&config, &model).unwrap_err().contains("has shape [-1, 4] in the model"));
        config.input = vec![input(DataType::Int32, vec![2, 2])];
        config.input[0].reshape = Some(ModelTensorReshape { shape: vec![4] });
        let spec = &input_specs(&config, &model).unwrap()[0];
        assert_eq!(spec.model_dims(&[2, 2]), Some(vec![4]));
        config.input[0].name = "OTHER".into();
        assert!(input_specs(&config, &model)
            .unwrap_err()
            .contains("model input 'IN' is not in the configuration"));
        let output =
            ModelOutput { name: "NOPE".into(), data_type: DataType::Int32.to_config(), ..Default::default() };
        config.output = vec![output];
        assert!(output_specs(&config, &model).unwrap_err().contains("unexpected inference output 'NOPE'"));
    }
}
