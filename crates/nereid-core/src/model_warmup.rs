//! Triton's model warmup: before a model version is ready, each new instance executes the
//! config's `model_warmup` samples (zeros, random bytes, or the bytes of
//! `<model>/warmup/<input_data_file>`), `batch_size` requests of batch 1 together, `count` times.
//! A failing sample fails the load. Warmup goes to the instance directly: no queue, no statistics.

use std::path::Path;

use nereid_proto::inference::model_warmup::input::InputDataType;
use nereid_proto::inference::ModelConfig;

use crate::backend::{BackendInstance, ExecTimer};
use crate::error::{Error, Result};
use crate::infer_request::{log_prefix, InferRequest};
use crate::tensor::{element_count, DataType, Tensor};

/// Where `input_data_file`s are, in the model's folder.
const WARMUP_FOLDER: &str = "warmup";

pub(crate) struct WarmupSample {
    name: String,
    count: u32,
    requests: Vec<InferRequest>,
}

/// The config's samples as requests; samples of batch size 0 are skipped, as in Triton.
pub(crate) fn samples(config: &ModelConfig, model_dir: &Path) -> Result<Vec<WarmupSample>> {
    let batching = config.max_batch_size != 0;
    let mut samples = Vec::new();
    for warmup in config.model_warmup.iter().filter(|w| w.batch_size > 0) {
        let mut inputs = Vec::with_capacity(warmup.inputs.len());
        for (name, input) in &warmup.inputs {
            let datatype = DataType::from_config(input.data_type)
                .ok_or_else(|| Error::invalid_arg(format!("warmup input '{name}' has no valid data_type")))?;
            let count = element_count(&input.dims).ok_or_else(|| {
                Error::invalid_arg(format!(
                    "warmup setting expects all variable-size dimensions are specified for input '{name}'"
                ))
            })?;
            // BYTES elements of zeros are empty strings: 4 length bytes each.
            let size = count * datatype.byte_size().unwrap_or(4);
            let data = match &input.input_data_type {
                Some(InputDataType::ZeroData(_)) => vec![0; size],
                Some(InputDataType::RandomData(_)) if datatype == DataType::Bytes => vec![0; size],
                Some(InputDataType::RandomData(_)) => random_bytes(size),
                Some(InputDataType::InputDataFile(file)) => {
                    let path = model_dir.join(WARMUP_FOLDER).join(file);
                    let mut data = std::fs::read(&path).map_err(|e| {
                        Error::invalid_arg(format!("failed to read warmup file '{}': {e}", path.display()))
                    })?;
                    if datatype != DataType::Bytes {
                        if data.len() < size {
                            // Triton's text, missing space included.
                            return Err(Error::invalid_arg(format!(
                                "{}warmup setting expects {size} bytes, but the data provided from {file}only has {} bytes",
                                log_prefix(""),
                                data.len()
                            )));
                        }
                        data.truncate(size);
                    }
                    data
                }
                None => {
                    return Err(Error::invalid_arg(format!(
                        "warmup setting expects input '{name}' to have input_data_type set"
                    )))
                }
            };
            let shape: Vec<i64> =
                batching.then_some(1).into_iter().chain(input.dims.iter().copied()).collect();
            inputs.push(Tensor::new(name.clone(), datatype, shape, data));
        }
        let requests = (0..warmup.batch_size)
            .map(|_| {
                let mut request = InferRequest::new(config.name.clone(), None);
                request.inputs = inputs.clone();
                request
            })
            .collect();
        samples.push(WarmupSample { name: warmup.name.clone(), count: warmup.count.max(1), requests });
    }
    Ok(samples)
}

/// Runs every sample on `instance`, stopping at the first failure.
pub(crate) fn run(instance: &mut dyn BackendInstance, samples: &[WarmupSample]) -> Result<()> {
    for sample in samples {
        for _ in 0..sample.count {
            let errors: Vec<String> = instance
                .execute(&sample.requests, &mut ExecTimer::start())
                .into_iter()
                .filter_map(|r| r.err().map(|e| e.message))
                .collect();
            if !errors.is_empty() {
                let mut message = format!("failed to run warmup sample '{}': ", sample.name);
                for error in errors {
                    message.push_str(&format!("{error}; "));
                }
                return Err(Error::invalid_arg(message));
            }
        }
    }
    Ok(())
}

/// Arbitrary bytes, as Triton fills random warmup data with `rand()`.
fn random_bytes(size: usize) -> Vec<u8> {
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
        | 1;
    (0..size)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use nereid_proto::inference::model_warmup::Input;
    use nereid_proto::inference::ModelWarmup;

    use super::*;
    use crate::tensor::bytes_elements;

    fn warmup(
        batch_size: u32,
        count: u32,
        inputs: &[(&str, DataType, &[i64], InputDataType)],
    ) -> ModelWarmup {
        let inputs = inputs
            .iter()
            .map(|(name, datatype, dims, data)| {
                let input = Input {
                    data_type: datatype.to_config(),
                    dims: dims.to_vec(),
                    input_data_type: Some(data.clone()),
                };
                (name.to_string(), input)
            })
            .collect();
        ModelWarmup { name: "sample".into(), batch_size, inputs, count }
    }

    #[test]
    fn zero_random_and_file_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(WARMUP_FOLDER)).unwrap();
        std::fs::write(dir.path().join("warmup/raw"), [1u8, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
        let inputs = [
            ("Z", DataType::Fp32, &[2][..], InputDataType::ZeroData(true)),
            ("R", DataType::Int8, &[3, 2][..], InputDataType::RandomData(true)),
            ("S", DataType::Bytes, &[2][..], InputDataType::RandomData(true)),
            ("F", DataType::Int16, &[4][..], InputDataType::InputDataFile("raw".into())),
        ];
        let config = ModelConfig {
            name: "m".into(),
            max_batch_size: 4,
            model_warmup: vec![warmup(2, 0, &inputs)],
            ..Default::default()
        };
        let samples = samples(&config, dir.path()).unwrap();
        assert_eq!((samples.len(), samples[0].count, samples[0].requests.len()), (1, 1, 2));
        let request = &samples[0].requests[0];
        let input = |name| request.input(name).unwrap();
        assert_eq!((input("Z").shape.clone(), input("Z").data.to_vec()), (vec![1, 2], vec![0; 8]));
        assert_eq!((input("R").shape.clone(), input("R").data.len()), (vec![1, 3, 2], 6));
        let strings: Vec<_> = bytes_elements(&input("S").data).collect();
        assert_eq!(strings, vec![Ok(&b""[..]), Ok(&b""[..])]);
        assert_eq!(input("F").data.to_vec(), vec![1, 2, 3, 4, 5, 6, 7, 8], "the file's first 8 bytes");
    }

    #[test]
    fn triton_errors_and_skipped_samples() {
        let dir = tempfile::tempdir().unwrap();
        let config = |inputs: &[(&str, DataType, &[i64], InputDataType)], batch_size| ModelConfig {
            name: "m".into(),
            model_warmup: vec![warmup(batch_size, 1, inputs)],
            ..Default::default()
        };
        let err = |c: ModelConfig| samples(&c, dir.path()).err().unwrap().message;
        assert_eq!(
            err(config(&[("X", DataType::Fp32, &[-1], InputDataType::ZeroData(true))], 1)),
            "warmup setting expects all variable-size dimensions are specified for input 'X'"
        );
        std::fs::create_dir(dir.path().join(WARMUP_FOLDER)).unwrap();
        std::fs::write(dir.path().join("warmup/short"), [0u8; 3]).unwrap();
        assert_eq!(
            err(config(&[("X", DataType::Fp32, &[1], InputDataType::InputDataFile("short".into()))], 1)),
            "[request id: <id_unknown>] warmup setting expects 4 bytes, but the data provided from shortonly has 3 bytes"
        );
        let skipped = config(&[("X", DataType::Fp32, &[-1], InputDataType::ZeroData(true))], 0);
        assert!(samples(&skipped, dir.path()).unwrap().is_empty());
        // Without a batch dimension the dims are the shape.
        let plain = config(&[("X", DataType::Fp32, &[3], InputDataType::ZeroData(true))], 1);
        assert_eq!(samples(&plain, dir.path()).unwrap()[0].requests[0].inputs[0].shape, vec![3]);
    }
}
