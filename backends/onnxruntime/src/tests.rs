//! Session tests on small models that the project's Python venv (`onnx`) writes; skipped, with
//! the reason printed, where that venv is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use nereid_core::backend::{Backend, ExecTimer, InstanceKind, InstanceSpec, ModelLocation};
use nereid_core::infer_request::InferRequest;
use nereid_core::tensor::{serialize_bytes, DataType, Tensor};
use nereid_proto::inference::model_config::SchedulingChoice;
use nereid_proto::inference::{ModelConfig, ModelInput};

use crate::OnnxRuntimeBackend;

/// Writes `<dir>/<model>/1/model.onnx` for: `add` (INT32 and FP32 inputs of shape [-1, 4],
/// each added to itself), `strings` (Identity of a string tensor [-1, 2]) and `half` (Identity of
/// FP16 [3], no batch dimension).
const MAKE_MODELS: &str = r#"
import os, sys
from onnx import TensorProto as T, helper as h, save
def model(name, nodes, inputs, outputs):
    graph = h.make_graph(nodes, name, [h.make_tensor_value_info(*i) for i in inputs],
                         [h.make_tensor_value_info(*o) for o in outputs])
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    os.makedirs(os.path.join(sys.argv[1], name, "1"))
    save(m, os.path.join(sys.argv[1], name, "1", "model.onnx"))
model("add", [h.make_node("Add", ["INPUT0", "INPUT0"], ["OUTPUT0"]),
              h.make_node("Add", ["INPUT1", "INPUT1"], ["OUTPUT1"])],
      [("INPUT0", T.INT32, ["batch", 4]), ("INPUT1", T.FLOAT, ["batch", 4])],
      [("OUTPUT0", T.INT32, ["batch", 4]), ("OUTPUT1", T.FLOAT, ["batch", 4])])
model("strings", [h.make_node("Identity", ["TEXT"], ["TEXT_OUT"])],
      [("TEXT", T.STRING, [None, 2])], [("TEXT_OUT", T.STRING, [None, 2])])
model("half", [h.make_node("Identity", ["X"], ["Y"])],
      [("X", T.FLOAT16, [3])], [("Y", T.FLOAT16, [3])])
"#;

/// A model repository with the models above, or `None` (printing why) without the venv.
fn repository() -> Option<tempfile::TempDir> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if !python.exists() {
        println!("skipped: {} is missing (the project's venv with onnx and onnxruntime)", python.display());
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&python).arg("-c").arg(MAKE_MODELS).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "making models failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(dir)
}

fn location(repo: &Path, name: &str) -> ModelLocation {
    let model_dir: PathBuf = repo.join(name);
    ModelLocation {
        name: name.into(),
        version: 1,
        version_dir: model_dir.join("1"),
        model_dir,
        backend_config: Default::default(),
    }
}

fn auto_config(repo: &Path, name: &str) -> ModelConfig {
    let mut config = ModelConfig {
        name: name.into(),
        backend: "onnxruntime".into(),
        default_model_filename: "model.onnx".into(),
        ..Default::default()
    };
    OnnxRuntimeBackend.auto_complete_config(&location(repo, name), &mut config).unwrap();
    config
}

fn request(inputs: Vec<Tensor>) -> InferRequest {
    let mut request = InferRequest::new("test", None);
    request.inputs = inputs;
    request
}

fn execute(
    repo: &Path,
    config: &ModelConfig,
    requests: &[InferRequest],
) -> Vec<nereid_core::Result<Vec<Tensor>>> {
    let model = OnnxRuntimeBackend.load_model(&location(repo, &config.name), config).unwrap();
    let spec = InstanceSpec { name: format!("{}_0", config.name), kind: InstanceKind::Cpu, device_id: 0 };
    let mut instance = model.create_instance(&spec).unwrap();
    let mut timer = ExecTimer::start();
    let results = instance.execute(requests, &mut timer);
    assert!(timer.input_end.is_some() && timer.infer_end >= timer.input_end);
    results
}

fn int32s(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn fp32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn add_request(rows: i64, first: i32) -> InferRequest {
    let ints: Vec<i32> = (first..first + 4 * rows as i32).collect();
    let floats: Vec<f32> = ints.iter().map(|&i| i as f32 + 0.5).collect();
    request(vec![
        Tensor::new("INPUT0", DataType::Int32, vec![rows, 4], int32s(&ints)),
        Tensor::new("INPUT1", DataType::Fp32, vec![rows, 4], fp32s(&floats)),
    ])
}

#[test]
fn auto_complete_and_batched_execute() {
    let Some(repo) = repository() else { return };
    let config = auto_config(repo.path(), "add");
    assert_eq!(config.max_batch_size, 4);
    assert!(matches!(config.scheduling_choice, Some(SchedulingChoice::DynamicBatching(_))));
    let names: Vec<_> = config.input.iter().map(|i| (i.name.as_str(), i.data_type, i.dims.clone())).collect();
    assert_eq!(
        names,
        vec![
            ("INPUT0", DataType::Int32.to_config(), vec![4]),
            ("INPUT1", DataType::Fp32.to_config(), vec![4])
        ]
    );
    assert_eq!(config.output.len(), 2);

    // Two requests of batch 1 and 2 run as one batch of 3 and come back split.
    let results = execute(repo.path(), &config, &[add_request(1, 0), add_request(2, 100)]);
    let first = results[0].as_ref().unwrap();
    assert_eq!(first[0], Tensor::new("OUTPUT0", DataType::Int32, vec![1, 4], int32s(&[0, 2, 4, 6])));
    assert_eq!(first[1], Tensor::new("OUTPUT1", DataType::Fp32, vec![1, 4], fp32s(&[1.0, 3.0, 5.0, 7.0])));
    let second = results[1].as_ref().unwrap();
    let doubled: Vec<i32> = (100..108).map(|i| 2 * i).collect();
    assert_eq!(second[0], Tensor::new("OUTPUT0", DataType::Int32, vec![2, 4], int32s(&doubled)));
    let doubled: Vec<f32> = (100..108).map(|i| 2.0 * i as f32 + 1.0).collect();
    assert_eq!(second[1], Tensor::new("OUTPUT1", DataType::Fp32, vec![2, 4], fp32s(&doubled)));
}

#[test]
fn a_bad_request_fails_alone() {
    let Some(repo) = repository() else { return };
    let config = auto_config(repo.path(), "add");
    let mut bad = add_request(1, 0);
    bad.inputs.pop();
    let results = execute(repo.path(), &config, &[add_request(1, 0), bad, add_request(1, 8)]);
    assert!(results[1].as_ref().unwrap_err().message.contains("missing input 'INPUT1'"));
    assert_eq!(results[2].as_ref().unwrap()[0].data, int32s(&[16, 18, 20, 22]));
    assert!(results[0].is_ok());
}

#[test]
fn config_datatype_mismatch_fails_load() {
    let Some(repo) = repository() else { return };
    let mut config = auto_config(repo.path(), "add");
    config.input[0] = ModelInput { data_type: DataType::Fp32.to_config(), ..config.input[0].clone() };
    let model = OnnxRuntimeBackend.load_model(&location(repo.path(), "add"), &config).unwrap();
    let spec = InstanceSpec { name: "add_0".into(), kind: InstanceKind::Cpu, device_id: 0 };
    let err = model.create_instance(&spec).err().unwrap();
    assert_eq!(
        err.message,
        "unable to load model 'add', configuration expects datatype TYPE_FP32 for input 'INPUT0', model provides TYPE_INT32"
    );
}

#[test]
fn bytes_identity_keeps_every_byte() {
    let Some(repo) = repository() else { return };
    let config = auto_config(repo.path(), "strings");
    assert_eq!(config.input[0].data_type, DataType::Bytes.to_config());
    let elements: [&[u8]; 4] = [b"hello", b"", b"nul\0inside", &[0xff, 0xfe]];
    let a = Tensor::new("TEXT", DataType::Bytes, vec![1, 2], serialize_bytes(&elements[..2]));
    let b = Tensor::new("TEXT", DataType::Bytes, vec![1, 2], serialize_bytes(&elements[2..]));
    let results = execute(repo.path(), &config, &[request(vec![a.clone()]), request(vec![b.clone()])]);
    assert_eq!(results[0].as_ref().unwrap()[0], Tensor { name: "TEXT_OUT".into(), ..a });
    assert_eq!(results[1].as_ref().unwrap()[0], Tensor { name: "TEXT_OUT".into(), ..b });
}

#[test]
fn unbatched_fp16_runs_each_request() {
    let Some(repo) = repository() else { return };
    let config = auto_config(repo.path(), "half");
    assert_eq!((config.max_batch_size, config.input[0].dims.clone()), (0, vec![3]));
    // 1.0, -2.0, 0.5 as IEEE half.
    let data: Vec<u8> = [0x3c00u16, 0xc000, 0x3800].iter().flat_map(|v| v.to_le_bytes()).collect();
    let x = Tensor::new("X", DataType::Fp16, vec![3], data.clone());
    let results = execute(repo.path(), &config, &[request(vec![x.clone()]), request(vec![x])]);
    for result in results {
        assert_eq!(result.unwrap(), vec![Tensor::new("Y", DataType::Fp16, vec![3], data.clone())]);
    }
}
