//! An instance: one ONNX Runtime session executing batches of requests.

use nereid_core::backend::{BackendInstance, ExecTimer};
use nereid_core::infer_request::InferRequest;
use nereid_core::tensor::Tensor;
use nereid_core::{Error, Result};
use ort::session::{HasSelectedOutputs, RunOptions, Session};

use crate::config::IoSpec;
use crate::session_options::SessionOptions;
use crate::{batch, ort_tensor};

pub(crate) struct OnnxInstance {
    session: Session,
    /// Computes only the configured outputs.
    run_options: RunOptions<HasSelectedOutputs>,
    batching: bool,
    inputs: Vec<IoSpec>,
    outputs: Vec<IoSpec>,
}

/// One request's tensor for one model input.
struct Feed<'r> {
    /// Index into `OnnxInstance::inputs`.
    input: usize,
    tensor: &'r Tensor,
    /// The shape the model sees, batch dimension included when batching.
    shape: Vec<i64>,
}

impl OnnxInstance {
    pub fn new(
        session: Session,
        batching: bool,
        inputs: Vec<IoSpec>,
        outputs: Vec<IoSpec>,
        options: &SessionOptions,
    ) -> ort::Result<OnnxInstance> {
        let names: Vec<String> = outputs.iter().map(|o| o.name.clone()).collect();
        let run_options = options.run_options(&names)?;
        Ok(OnnxInstance { session, run_options, batching, inputs, outputs })
    }

    /// A request's inputs as the model takes them.
    fn feeds<'r>(&self, request: &'r InferRequest) -> Result<Vec<Feed<'r>>> {
        let mut feeds = Vec::with_capacity(self.inputs.len());
        for (input, spec) in self.inputs.iter().enumerate() {
            let Some(tensor) = request.input(&spec.name) else {
                if spec.optional {
                    continue;
                }
                return Err(Error::invalid_arg(format!("missing input '{}'", spec.name)));
            };
            let shape = with_batch(self.batching, &tensor.shape, |dims| spec.model_dims(dims));
            let shape = shape.ok_or_else(|| {
                Error::invalid_arg(format!(
                    "input '{}' with shape {:?} does not fit the model",
                    spec.name, tensor.shape
                ))
            })?;
            feeds.push(Feed { input, tensor, shape });
        }
        Ok(feeds)
    }

    /// Runs a group of requests (joined along the batch dimension) once; returns each request's
    /// outputs in config order.
    fn run(
        &mut self,
        group: &[(usize, Vec<Feed>)],
        sizes: &[usize],
        timer: &mut ExecTimer,
    ) -> Result<Vec<Vec<Tensor>>> {
        let mut inputs = Vec::with_capacity(group[0].1.len());
        for (k, feed) in group[0].1.iter().enumerate() {
            let spec = &self.inputs[feed.input];
            let tensors: Vec<&Tensor> = group.iter().map(|(_, feeds)| feeds[k].tensor).collect();
            let joined = batch::join(&tensors);
            let mut shape = feed.shape.clone();
            if self.batching {
                shape[0] = joined.shape[0];
            }
            let value = ort_tensor::to_ort(spec.datatype, &shape, &joined.data)
                .map_err(|e| Error::invalid_arg(format!("input '{}': {e}", spec.name)))?;
            inputs.push((spec.name.as_str(), value));
        }
        timer.input_done();
        let mut outputs = self
            .session
            .run_with_options(inputs, &self.run_options)
            .map_err(|e| Error::internal(format!("onnx runtime error: {e}")))?;
        timer.infer_done();

        let mut per_request = vec![Vec::with_capacity(self.outputs.len()); group.len()];
        for spec in &self.outputs {
            let value = outputs
                .remove(&spec.name)
                .ok_or_else(|| Error::internal(format!("model produced no output '{}'", spec.name)))?;
            let mut tensor = ort_tensor::from_ort(&spec.name, value).map_err(Error::internal)?;
            tensor.shape = with_batch(self.batching, &tensor.shape, |dims| spec.client_dims(dims))
                .ok_or_else(|| {
                    Error::internal(format!(
                        "output '{}' has shape {:?}, which does not fit the config",
                        spec.name, tensor.shape
                    ))
                })?;
            let parts = if self.batching {
                batch::split(tensor, sizes).map_err(Error::internal)?
            } else {
                vec![tensor]
            };
            for (out, part) in per_request.iter_mut().zip(parts) {
                out.push(part);
            }
        }
        Ok(per_request)
    }
}

/// Maps a shape's non-batch dims with `map`, keeping the batch dimension when batching.
fn with_batch(batching: bool, shape: &[i64], map: impl Fn(&[i64]) -> Option<Vec<i64>>) -> Option<Vec<i64>> {
    if !batching {
        return map(shape);
    }
    let (&batch, dims) = shape.split_first()?;
    map(dims).map(|dims| [vec![batch], dims].concat())
}

/// Requests can run as one batch when they feed the same inputs with the same non-batch shapes.
fn joinable(fed: &[(usize, Vec<Feed>)]) -> bool {
    let Some((_, first)) = fed.first() else { return true };
    fed.iter().all(|(_, feeds)| {
        feeds.len() == first.len()
            && feeds.iter().zip(first).all(|(a, b)| a.input == b.input && a.shape[1..] == b.shape[1..])
    })
}

impl BackendInstance for OnnxInstance {
    fn execute(&mut self, requests: &[InferRequest], timer: &mut ExecTimer) -> Vec<Result<Vec<Tensor>>> {
        let mut results = vec![Err(Error::internal("request was not executed")); requests.len()];
        // A request whose inputs cannot be fed fails alone.
        let mut fed = Vec::with_capacity(requests.len());
        for (i, request) in requests.iter().enumerate() {
            match self.feeds(request) {
                Ok(feeds) => fed.push((i, feeds)),
                Err(e) => results[i] = Err(e),
            }
        }
        let groups: Vec<Vec<(usize, Vec<Feed>)>> = if self.batching && fed.len() > 1 && joinable(&fed) {
            vec![fed]
        } else {
            fed.into_iter().map(|f| vec![f]).collect()
        };
        for group in groups {
            let sizes: Vec<usize> =
                group.iter().map(|(i, _)| requests[*i].batch_size(self.batching)).collect();
            match self.run(&group, &sizes, timer) {
                Ok(outputs) => {
                    for ((i, _), out) in group.iter().zip(outputs) {
                        results[*i] = Ok(out);
                    }
                }
                Err(e) => {
                    for (i, _) in &group {
                        results[*i] = Err(e.clone());
                    }
                }
            }
        }
        results
    }
}
