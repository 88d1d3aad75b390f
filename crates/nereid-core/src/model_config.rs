//! Model configuration (`config.pbtxt`): parsing Triton's text format and JSON forms, rendering
//! it as Triton does, filling Triton's defaults and checking it with Triton's messages.

mod json;
mod normalize;
mod text;
mod validate;

use std::fmt;
use std::path::Path;

use miette::Diagnostic;
use nereid_proto::inference::ModelConfig;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};

pub use normalize::{fill_defaults, place_auto_on_cpu, resolve_instance_kinds};
pub use validate::{validate, validate_instance_groups, validate_io};

/// A config that could not be read or parsed; the message names the file and, for syntax and
/// schema errors, the line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or "model configuration JSON".
    pub origin: String,
    /// 1-based line and column, where known.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed to parse {}: ", self.origin)?;
        if let Some((line, column)) = self.position {
            write!(f, "line {line}, column {column}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for crate::Error {
    fn from(error: ConfigError) -> Self {
        crate::Error::invalid_arg(error.to_string())
    }
}

fn descriptor() -> MessageDescriptor {
    nereid_proto::descriptor_pool()
        .get_message_by_name("inference.ModelConfig")
        .expect("inference.ModelConfig is in the descriptor pool")
}

/// Parses `config.pbtxt` text; `path` is only used in errors.
pub fn parse(text: &str, path: &Path) -> Result<ModelConfig, ConfigError> {
    let (fixed, inserted) = text::add_list_colons(text);
    let message = DynamicMessage::parse_text_format(descriptor(), &fixed).map_err(|error| {
        // Errors without a place (unexpected end of input) are at the end.
        let offset = error.labels().and_then(|mut labels| labels.next()).map(|label| label.offset());
        let offset = text::original_offset(offset.unwrap_or(fixed.len()), &inserted);
        ConfigError {
            origin: path.display().to_string(),
            position: Some(text::line_column(text, offset)),
            message: error.to_string(),
        }
    })?;
    Ok(message.transcode_to().expect("a parsed ModelConfig transcodes to its own type"))
}

/// Parses the JSON form of a config (a load request's `config` parameter): protobuf's JSON
/// mapping, proto or JSON field names, 64-bit integers as numbers or strings.
pub fn from_json(value: &serde_json::Value) -> Result<ModelConfig, ConfigError> {
    let desc = descriptor();
    let mut value = value.clone();
    json::upper_case_enums(&mut value, &desc);
    let message = DynamicMessage::deserialize(desc, value).map_err(|error| ConfigError {
        origin: "model configuration JSON".into(),
        position: None,
        message: error.to_string(),
    })?;
    Ok(message.transcode_to().expect("a parsed ModelConfig transcodes to its own type"))
}

/// The config as `GET /v2/models/{model}/config` shows it.
pub fn to_json(config: &ModelConfig) -> serde_json::Value {
    let message = DynamicMessage::decode(descriptor(), config.encode_to_vec().as_slice())
        .expect("a ModelConfig decodes with its own descriptor");
    json::render(&message)
}

/// Reads `<model_dir>/configs/<config_name>.pbtxt` when named and present (Triton's
/// `--model-config-name`), else `<model_dir>/config.pbtxt`; `None` when there is no file.
pub fn load_config_file(
    model_dir: &Path,
    config_name: Option<&str>,
) -> Result<Option<ModelConfig>, ConfigError> {
    let named = config_name.map(|name| model_dir.join("configs").join(format!("{name}.pbtxt")));
    let path = named.filter(|path| path.is_file()).unwrap_or_else(|| model_dir.join("config.pbtxt"));
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text, &path).map(Some),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(ConfigError {
            origin: path.display().to_string(),
            position: None,
            message: error.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nereid_proto::inference::model_config::SchedulingChoice;
    use nereid_proto::inference::model_instance_group::Kind;
    use nereid_proto::inference::model_sequence_batching::control::Kind as ControlKind;
    use nereid_proto::inference::model_version_policy::PolicyChoice;
    use nereid_proto::inference::DataType;
    use serde_json::json;

    fn parse_str(text: &str) -> ModelConfig {
        parse(text, Path::new("/repo/m/config.pbtxt")).unwrap_or_else(|e| panic!("{e}"))
    }

    // Triton's docs/examples/model_repository/densenet_onnx/config.pbtxt.
    const DENSENET: &str = r#"name: "densenet_onnx"
platform: "onnxruntime_onnx"
max_batch_size : 1
input [
  {
    name: "data_0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
  }
]
output [
  {
    name: "fc6_1"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    reshape { shape: [ 1000, 1, 1 ] }
    label_filename: "densenet_labels.txt"
  }
]"#;

    #[test]
    fn parses_example_repository_config() {
        let config = parse_str(DENSENET);
        assert_eq!(config.name, "densenet_onnx");
        assert_eq!(config.max_batch_size, 1);
        assert_eq!(config.input[0].dims, [3, 224, 224]);
        assert_eq!(config.input[0].data_type(), DataType::TypeFp32);
        assert_eq!(config.output[0].reshape.as_ref().unwrap().shape, [1000, 1, 1]);
        assert_eq!(config.output[0].label_filename, "densenet_labels.txt");
    }

    #[test]
    fn parses_comments_instance_groups_parameters_and_dynamic_batching() {
        let config = parse_str(
            r#"# a comment with dims [ 1 ] in it
name: "m"  # trailing comment
backend: "onnxruntime"
instance_group [ { kind: KIND_CPU count: 2 } ]
dynamic_batching { }
parameters { key: "x" value: { string_value: "y [z]" } }
parameters [ { key: "execute_delay_ms" value: { string_value: "3" } } ]
version_policy: { specific { versions: [1, 3] } }"#,
        );
        assert_eq!(config.instance_group[0].kind(), Kind::Cpu);
        assert_eq!(config.instance_group[0].count, 2);
        assert!(matches!(config.scheduling_choice, Some(SchedulingChoice::DynamicBatching(_))));
        assert_eq!(config.parameters["x"].string_value, "y [z]");
        assert_eq!(config.parameters["execute_delay_ms"].string_value, "3");
        let Some(PolicyChoice::Specific(specific)) = config.version_policy.unwrap().policy_choice else {
            panic!("expected a specific version policy")
        };
        assert_eq!(specific.versions, [1, 3]);
    }

    #[test]
    fn parses_sequence_batching_controls() {
        // From Triton's docs/examples/model_repository/simple_dyna_sequence/config.pbtxt.
        let config = parse_str(
            r#"name: "simple_dyna_sequence"
max_batch_size: 8
sequence_batching {
    max_sequence_idle_microseconds: 10000000
    oldest {
      max_candidate_sequences: 1024
      max_queue_delay_microseconds: 10000
    }
  control_input [
    {
      name: "START"
      control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ]
    },
    {
      name: "CORRID"
      control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ]
    }
  ]
}"#,
        );
        let Some(SchedulingChoice::SequenceBatching(batching)) = config.scheduling_choice else {
            panic!("expected sequence batching")
        };
        assert_eq!(batching.max_sequence_idle_microseconds, 10_000_000);
        assert_eq!(batching.control_input[0].control[0].kind(), ControlKind::ControlSequenceStart);
        assert_eq!(batching.control_input[0].control[0].int32_false_true, [0, 1]);
        assert_eq!(batching.control_input[1].control[0].data_type(), DataType::TypeUint64);
    }

    #[test]
    fn parses_ensemble_steps() {
        // From Triton's docs/examples/model_repository/preprocess_resnet50_ensemble/config.pbtxt.
        let config = parse_str(
            r#"name: "preprocess_resnet50_ensemble"
platform: "ensemble"
ensemble_scheduling {
  step [
    {
      model_name: "image_preprocess_nchw_3x224x224_inception"
      model_version: -1
      input_map { key: "INPUT" value: "INPUT" }
      output_map { key: "OUTPUT" value: "preprocessed_image" }
    },
    {
      model_name: "resnet50_netdef"
      model_version: -1
      input_map { key: "gpu_0/data" value: "preprocessed_image" }
      output_map { key: "gpu_0/softmax" value: "OUTPUT" }
    }
  ]
}"#,
        );
        let Some(SchedulingChoice::EnsembleScheduling(ensemble)) = config.scheduling_choice else {
            panic!("expected ensemble scheduling")
        };
        assert_eq!(ensemble.step.len(), 2);
        assert_eq!(ensemble.step[0].model_version, -1);
        assert_eq!(ensemble.step[1].input_map["gpu_0/data"], "preprocessed_image");
        assert_eq!(ensemble.step[1].output_map["gpu_0/softmax"], "OUTPUT");
    }

    #[test]
    fn errors_name_file_line_column_and_field() {
        let text = "name: \"m\"\ninput [\n  {\n    name: \"a\"\n    dimz: [ 1 ]\n  }\n]\n";
        let error = parse(text, Path::new("/repo/m/config.pbtxt")).unwrap_err();
        assert_eq!(error.position, Some((5, 5)));
        assert_eq!(
            error.to_string(),
            "failed to parse /repo/m/config.pbtxt: line 5, column 5: field 'dimz' not found for \
             message 'inference.ModelInput'"
        );

        let error =
            parse("name: \"m\"\nmax_batch_size: [ 8 ]\ninput [ { data_type: TYPE_FP3 } ]", Path::new("c"))
                .unwrap_err();
        assert_eq!(error.position, Some((2, 17)), "{error}");

        let error = parse("input [ { data_type: TYPE_FP3 } ]", Path::new("c")).unwrap_err();
        assert_eq!(error.position, Some((1, 22)), "{error}");
        assert!(error.message.contains("TYPE_FP3"), "{error}");

        let error = parse("name: \"m\"\ninput [ {", Path::new("c")).unwrap_err();
        assert_eq!(error.position, Some((2, 10)), "{error}");
    }

    #[test]
    fn renders_json_as_triton_does() {
        let mut config = parse_str(DENSENET);
        fill_defaults(&mut config, "densenet_onnx");
        resolve_instance_kinds(&mut config, 0);
        let rendered = to_json(&config);
        // Top-level keys in Triton's order (declaration order); unset messages are absent.
        let keys: Vec<&str> = rendered.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "name",
                "platform",
                "backend",
                "runtime",
                "version_policy",
                "max_batch_size",
                "input",
                "output",
                "batch_input",
                "batch_output",
                "optimization",
                "instance_group",
                "default_model_filename",
                "cc_model_filenames",
                "metric_tags",
                "parameters",
                "model_warmup"
            ]
        );
        assert_eq!(rendered["version_policy"], json!({"latest": {"num_versions": 1}}));
        assert_eq!(
            rendered["output"][0],
            json!({
                "name": "fc6_1", "data_type": "TYPE_FP32", "dims": [1000],
                "reshape": {"shape": [1000, 1, 1]}, "label_filename": "densenet_labels.txt",
                "is_shape_tensor": false, "is_non_linear_format_io": false
            })
        );
        assert_eq!(
            rendered["optimization"],
            json!({
                "priority": "PRIORITY_DEFAULT", "input_pinned_memory": {"enable": true},
                "output_pinned_memory": {"enable": true}, "gather_kernel_buffer_threshold": 0,
                "eager_batching": false
            })
        );
        assert_eq!(
            rendered["instance_group"],
            json!([{
                "name": "densenet_onnx", "kind": "KIND_CPU", "count": 2, "gpus": [],
                "secondary_devices": [], "profile": [], "passive": false, "host_policy": ""
            }])
        );
        assert_eq!(rendered["default_model_filename"], "model.onnx");
    }

    #[test]
    fn renders_64_bit_integers_floats_and_maps_as_numbers() {
        let config = parse_str(
            "dynamic_batching { max_queue_delay_microseconds: 100 priority_levels: 2
               priority_queue_policy { key: 2 value: { default_timeout_microseconds: 5 } } }",
        );
        let batching = &to_json(&config)["dynamic_batching"];
        assert_eq!(batching["max_queue_delay_microseconds"], json!(100));
        assert_eq!(batching["priority_levels"], json!(2));
        assert_eq!(batching["priority_queue_policy"]["2"]["default_timeout_microseconds"], json!(5));

        let config = parse_str(
            "sequence_batching { direct { minimum_slot_utilization: 0.1 }
               control_input [ { name: \"S\" control [ { fp32_false_true: [ 0, 1.5 ] } ] } ] }",
        );
        let batching = &to_json(&config)["sequence_batching"];
        assert_eq!(batching["direct"]["minimum_slot_utilization"], json!(0.1));
        assert_eq!(batching["control_input"][0]["control"][0]["fp32_false_true"], json!([0, 1.5]));
    }

    #[test]
    fn json_round_trips_and_accepts_strings_and_lower_case_enums() {
        let mut config = parse_str(DENSENET);
        fill_defaults(&mut config, "densenet_onnx");
        assert_eq!(from_json(&to_json(&config)).unwrap(), config);

        let config = from_json(&json!({
            "name": "m",
            "backend": "onnxruntime",
            "input": [{"name": "x", "data_type": "type_fp32", "dims": ["-1", 4]}],
            "maxBatchSize": 4,
            "parameters": {"k": {"string_value": "v"}}
        }))
        .unwrap();
        assert_eq!(config.input[0].dims, [-1, 4]);
        assert_eq!(config.input[0].data_type(), DataType::TypeFp32);
        assert_eq!(config.max_batch_size, 4);
        assert_eq!(config.parameters["k"].string_value, "v");

        let error = from_json(&json!({"name": "m", "bogus": 1})).unwrap_err();
        assert!(error.to_string().contains("bogus"), "{error}");
    }

    #[test]
    fn loads_the_named_config_or_config_pbtxt() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_config_file(dir.path(), None).unwrap(), None);
        std::fs::write(dir.path().join("config.pbtxt"), "name: \"default\"").unwrap();
        std::fs::create_dir(dir.path().join("configs")).unwrap();
        std::fs::write(dir.path().join("configs/h100.pbtxt"), "name: \"h100\"").unwrap();
        let load = |name| load_config_file(dir.path(), name).unwrap().unwrap().name;
        assert_eq!(load(None), "default");
        assert_eq!(load(Some("h100")), "h100");
        assert_eq!(load(Some("missing")), "default");

        std::fs::write(dir.path().join("config.pbtxt"), "name: \"a\"\nbad").unwrap();
        let error = load_config_file(dir.path(), None).unwrap_err();
        assert!(error.to_string().contains("config.pbtxt: line 2"), "{error}");
    }
}
