//! An inference request as the core sees it, whatever frontend it came through.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::tensor::Tensor;

/// A request or response parameter (Triton's `InferParameter`).
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
}

pub type Parameters = BTreeMap<String, ParamValue>;

/// A sequence's correlation id: Triton accepts unsigned integers and strings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum CorrelationId {
    #[default]
    None,
    Uint(u64),
    String(String),
}

/// An output the client asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestedOutput {
    pub name: String,
    /// Top-k classification instead of the raw tensor (`classification` parameter); 0 = raw.
    pub class_count: u32,
}

#[derive(Clone, Debug)]
pub struct InferRequest {
    pub id: String,
    pub model_name: String,
    /// Requested version; `None` lets the version policy choose.
    pub model_version: Option<i64>,
    pub inputs: Vec<Tensor>,
    /// Empty means every output of the model.
    pub requested_outputs: Vec<RequestedOutput>,
    pub parameters: Parameters,
    pub correlation_id: CorrelationId,
    pub sequence_start: bool,
    pub sequence_end: bool,
    pub priority: u64,
    pub timeout_us: u64,
    /// When the frontend finished decoding it; request durations are measured from here.
    pub received: Instant,
}

impl InferRequest {
    pub fn new(model_name: impl Into<String>, model_version: Option<i64>) -> Self {
        InferRequest {
            id: String::new(),
            model_name: model_name.into(),
            model_version,
            inputs: Vec::new(),
            requested_outputs: Vec::new(),
            parameters: Parameters::new(),
            correlation_id: CorrelationId::None,
            sequence_start: false,
            sequence_end: false,
            priority: 0,
            timeout_us: 0,
            received: Instant::now(),
        }
    }

    pub fn input(&self, name: &str) -> Option<&Tensor> {
        self.inputs.iter().find(|t| t.name == name)
    }

    /// The batch size this request contributes: its first dimension when the model batches, else 1.
    pub fn batch_size(&self, model_batches: bool) -> usize {
        if !model_batches {
            return 1;
        }
        self.inputs
            .first()
            .and_then(|t| t.shape.first())
            .map(|&d| d.max(0) as usize)
            .unwrap_or(1)
    }
}
