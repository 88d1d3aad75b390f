//! What Triton fills into a config before loading (model_config_utils.cc:
//! `AutoCompleteBackendFields` without the folder inspection, `NormalizeModelConfig`,
//! `NormalizeInstanceGroup`).

use nereid_proto::inference::model_config::SchedulingChoice;
use nereid_proto::inference::model_instance_group::Kind;
use nereid_proto::inference::model_optimization_policy::PinnedMemoryBuffer;
use nereid_proto::inference::model_sequence_batching::StrategyChoice;
use nereid_proto::inference::model_version_policy::{Latest, PolicyChoice};
use nereid_proto::inference::{ModelConfig, ModelInstanceGroup, ModelVersionPolicy};

const SEQUENCE_IDLE_DEFAULT_MICROSECONDS: u64 = 1_000_000;

/// Fills the defaults Triton sets from the config alone. Instance kinds (and so the default
/// instance counts of `KIND_AUTO` groups) need the device count: see [`resolve_instance_kinds`].
pub fn fill_defaults(config: &mut ModelConfig, model_name: &str) {
    if config.name.is_empty() {
        config.name = model_name.to_owned();
    }
    complete_backend_fields(config);
    if config.version_policy.is_none() {
        let latest = Latest { num_versions: 1 };
        config.version_policy =
            Some(ModelVersionPolicy { policy_choice: Some(PolicyChoice::Latest(latest)) });
    }
    // Triton fills an empty preferred batch size list with max_batch_size.
    let default_preferred: Vec<i32> =
        Some(config.max_batch_size).filter(|&size| size > 0).into_iter().collect();
    match &mut config.scheduling_choice {
        Some(SchedulingChoice::DynamicBatching(batching)) if batching.preferred_batch_size.is_empty() => {
            batching.preferred_batch_size = default_preferred;
        }
        Some(SchedulingChoice::SequenceBatching(batching)) => {
            if batching.max_sequence_idle_microseconds == 0 {
                batching.max_sequence_idle_microseconds = SEQUENCE_IDLE_DEFAULT_MICROSECONDS;
            }
            if let Some(StrategyChoice::Oldest(oldest)) = &mut batching.strategy_choice {
                if oldest.preferred_batch_size.is_empty() {
                    oldest.preferred_batch_size = default_preferred;
                }
            }
        }
        // Ensembles have neither instances nor an optimization policy of their own.
        Some(SchedulingChoice::EnsembleScheduling(_)) => return,
        _ => {}
    }
    let optimization = config.optimization.get_or_insert_with(Default::default);
    let enabled = || Some(PinnedMemoryBuffer { enable: true });
    optimization.input_pinned_memory = optimization.input_pinned_memory.or_else(enabled);
    optimization.output_pinned_memory = optimization.output_pinned_memory.or_else(enabled);

    if config.instance_group.is_empty() {
        config.instance_group.push(ModelInstanceGroup { name: config.name.clone(), ..Default::default() });
    }
    for (index, group) in config.instance_group.iter_mut().enumerate() {
        if group.name.is_empty() {
            group.name = format!("{}_{index}", config.name);
        }
        if group.kind() != Kind::Auto && group.count < 1 {
            group.count = default_instance_count(group.kind(), &config.backend);
        }
    }
}

/// Triton's `KIND_AUTO`: GPU when there are GPUs and every listed one exists, else CPU. GPU
/// groups without `gpus` get all of them; counts left at 0 get Triton's default.
pub fn resolve_instance_kinds(config: &mut ModelConfig, gpu_count: usize) {
    if matches!(config.scheduling_choice, Some(SchedulingChoice::EnsembleScheduling(_))) {
        return;
    }
    let exists = |gpu: &i32| usize::try_from(*gpu).is_ok_and(|gpu| gpu < gpu_count);
    for group in &mut config.instance_group {
        if group.kind() == Kind::Auto {
            let on_gpu = gpu_count > 0 && group.gpus.iter().all(exists);
            group.set_kind(if on_gpu { Kind::Gpu } else { Kind::Cpu });
        }
        if group.kind() == Kind::Gpu && group.gpus.is_empty() {
            group.gpus = (0..gpu_count as i32).collect();
        }
        if group.count < 1 {
            group.count = default_instance_count(group.kind(), &config.backend);
        }
    }
}

/// `KIND_AUTO` groups go on the CPU: for backends or platforms that keep it off the GPU
/// (before [`resolve_instance_kinds`], which then gives them the CPU's default count).
pub fn place_auto_on_cpu(config: &mut ModelConfig) {
    for group in config.instance_group.iter_mut().filter(|g| g.kind() == Kind::Auto) {
        group.set_kind(Kind::Cpu);
    }
}

/// `SetDefaultInstanceCount`: two CPU instances for the backends that scale with them.
fn default_instance_count(kind: Kind, backend: &str) -> i32 {
    if kind == Kind::Cpu && matches!(backend, "tensorflow" | "onnxruntime") {
        2
    } else {
        1
    }
}

/// `platform` ↔ `backend` ↔ `default_model_filename`, from whichever of them is given.
fn complete_backend_fields(config: &mut ModelConfig) {
    if config.backend.is_empty() {
        config.backend = backend_of(&config.platform, &config.default_model_filename).into();
    }
    let (platform, filename) = match (config.backend.as_str(), config.platform.as_str()) {
        ("tensorflow", "") => match config.default_model_filename.as_str() {
            "model.graphdef" => ("tensorflow_graphdef", ""),
            "model.savedmodel" => ("tensorflow_savedmodel", ""),
            _ => ("", ""),
        },
        ("tensorflow", "tensorflow_graphdef") => ("", "model.graphdef"),
        ("tensorflow", "tensorflow_savedmodel") => ("", "model.savedmodel"),
        ("tensorrt", _) => ("tensorrt_plan", "model.plan"),
        ("onnxruntime", _) => ("onnxruntime_onnx", "model.onnx"),
        ("pytorch", "torch_aoti") => ("", "model.pt2"),
        ("pytorch", _) => ("pytorch_libtorch", "model.pt"),
        ("openvino", _) => ("", "model.xml"),
        ("python", _) => ("", "model.py"),
        _ => ("", ""),
    };
    if config.platform.is_empty() {
        config.platform = platform.into();
    }
    if config.default_model_filename.is_empty() {
        config.default_model_filename = filename.into();
    }
}

fn backend_of(platform: &str, filename: &str) -> &'static str {
    match (platform, filename) {
        ("tensorflow_graphdef" | "tensorflow_savedmodel", _) | (_, "model.graphdef" | "model.savedmodel") => {
            "tensorflow"
        }
        ("tensorrt_plan", _) | (_, "model.plan") => "tensorrt",
        ("onnxruntime_onnx", _) | (_, "model.onnx") => "onnxruntime",
        ("pytorch_libtorch" | "libtorch" | "torch_aoti", _) | (_, "model.pt" | "model.pt2") => "pytorch",
        (_, "model.xml") => "openvino",
        (_, "model.py") => "python",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_config::parse;
    use std::path::Path;

    fn filled(text: &str) -> ModelConfig {
        let mut config = parse(text, Path::new("config.pbtxt")).unwrap();
        fill_defaults(&mut config, "folder");
        config
    }

    fn backend_fields(text: &str) -> (String, String, String) {
        let config = filled(text);
        (config.platform, config.backend, config.default_model_filename)
    }

    #[test]
    fn name_defaults_to_the_folder() {
        assert_eq!(filled("").name, "folder");
        assert_eq!(filled("name: \"given\"").name, "given");
    }

    #[test]
    fn platform_backend_and_file_name_complete_each_other() {
        let fields = |p: &str, b: &str, f: &str| (p.to_owned(), b.to_owned(), f.to_owned());
        let onnx = fields("onnxruntime_onnx", "onnxruntime", "model.onnx");
        assert_eq!(backend_fields("platform: \"onnxruntime_onnx\""), onnx);
        assert_eq!(backend_fields("backend: \"onnxruntime\""), onnx);
        assert_eq!(backend_fields("default_model_filename: \"model.onnx\""), onnx);
        let torch = fields("pytorch_libtorch", "pytorch", "model.pt");
        assert_eq!(backend_fields("platform: \"pytorch_libtorch\""), torch);
        assert_eq!(backend_fields("backend: \"pytorch\""), torch);
        assert_eq!(backend_fields("platform: \"torch_aoti\""), fields("torch_aoti", "pytorch", "model.pt2"));
        let plan = fields("tensorrt_plan", "tensorrt", "model.plan");
        assert_eq!(backend_fields("backend: \"tensorrt\""), plan);
        assert_eq!(
            backend_fields("platform: \"tensorflow_savedmodel\""),
            fields("tensorflow_savedmodel", "tensorflow", "model.savedmodel")
        );
        assert_eq!(
            backend_fields("default_model_filename: \"model.graphdef\""),
            fields("tensorflow_graphdef", "tensorflow", "model.graphdef")
        );
        assert_eq!(backend_fields("backend: \"python\""), fields("", "python", "model.py"));
        assert_eq!(backend_fields("platform: \"ensemble\""), fields("ensemble", "", ""));
        assert_eq!(backend_fields("backend: \"identity\""), fields("", "identity", ""));
        // A given file name is kept.
        assert_eq!(
            backend_fields("backend: \"onnxruntime\" default_model_filename: \"m.onnx\""),
            fields("onnxruntime_onnx", "onnxruntime", "m.onnx")
        );
    }

    #[test]
    fn version_policy_and_batching_defaults() {
        let config = filled("max_batch_size: 8 dynamic_batching { }");
        let latest = config.version_policy.unwrap().policy_choice;
        assert_eq!(latest, Some(PolicyChoice::Latest(Latest { num_versions: 1 })));
        let Some(SchedulingChoice::DynamicBatching(batching)) = config.scheduling_choice else { panic!() };
        assert_eq!(batching.preferred_batch_size, [8]);
        let Some(SchedulingChoice::DynamicBatching(batching)) =
            filled("max_batch_size: 8 dynamic_batching { preferred_batch_size: [ 2, 4 ] }").scheduling_choice
        else {
            panic!()
        };
        assert_eq!(batching.preferred_batch_size, [2, 4]);

        let config = filled("max_batch_size: 4 sequence_batching { oldest { } }");
        let Some(SchedulingChoice::SequenceBatching(batching)) = config.scheduling_choice else { panic!() };
        assert_eq!(batching.max_sequence_idle_microseconds, 1_000_000);
        let Some(StrategyChoice::Oldest(oldest)) = batching.strategy_choice else { panic!() };
        assert_eq!(oldest.preferred_batch_size, [4]);
    }

    #[test]
    fn instance_groups_get_names_kinds_and_counts() {
        let mut config = filled("backend: \"onnxruntime\"");
        assert_eq!(config.instance_group.len(), 1);
        assert_eq!(config.instance_group[0].name, "folder");
        assert_eq!(config.instance_group[0].count, 0, "an AUTO group's count waits for its kind");
        resolve_instance_kinds(&mut config, 0);
        assert_eq!((config.instance_group[0].kind(), config.instance_group[0].count), (Kind::Cpu, 2));

        let text = "name: \"m\" backend: \"pytorch\"
            instance_group [ { kind: KIND_CPU }, { count: 3 }, { kind: KIND_GPU name: \"g\" } ]";
        let mut config = filled(text);
        let names: Vec<_> = config.instance_group.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["m_0", "m_1", "g"]);
        assert_eq!(config.instance_group[0].count, 1);
        resolve_instance_kinds(&mut config, 2);
        let group = &config.instance_group[1];
        assert_eq!((group.kind(), group.count, group.gpus.clone()), (Kind::Gpu, 3, vec![0, 1]));
        assert_eq!(config.instance_group[2].gpus, [0, 1]);

        // AUTO listing a GPU that is not there falls back to CPU (and keeps the list, which
        // validation then rejects as Triton does).
        let mut config = filled("instance_group [ { gpus: [ 3 ] } ]");
        resolve_instance_kinds(&mut config, 2);
        assert_eq!(config.instance_group[0].kind(), Kind::Cpu);
    }

    #[test]
    fn auto_groups_can_be_kept_on_the_cpu() {
        let mut config = filled("instance_group [ { count: 3 }, { kind: KIND_GPU } ]");
        place_auto_on_cpu(&mut config);
        resolve_instance_kinds(&mut config, 2);
        let kinds: Vec<_> = config.instance_group.iter().map(|g| (g.kind(), g.count)).collect();
        assert_eq!(kinds, [(Kind::Cpu, 3), (Kind::Gpu, 1)]);
    }

    #[test]
    fn ensembles_get_no_instances_or_optimization() {
        let config = filled("platform: \"ensemble\" ensemble_scheduling { }");
        assert!(config.instance_group.is_empty());
        assert!(config.optimization.is_none());
        let config = filled("backend: \"onnxruntime\"");
        let optimization = config.optimization.unwrap();
        assert_eq!(optimization.input_pinned_memory, Some(PinnedMemoryBuffer { enable: true }));
        assert_eq!(optimization.output_pinned_memory, Some(PinnedMemoryBuffer { enable: true }));
        let config = filled("optimization { input_pinned_memory { enable: false } }");
        assert_eq!(
            config.optimization.unwrap().input_pinned_memory,
            Some(PinnedMemoryBuffer { enable: false })
        );
    }
}
