//! An inference request as the core sees it, whatever frontend it came through.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use nereid_proto::inference::ModelConfig;

use crate::decoupled::ResponseSender;
use crate::error::{Error, Result};
use crate::stats::ComputeSink;
use crate::tensor::{bytes_elements, element_count, DataType, Tensor};

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
    /// Where a decoupled model's responses go (set by [`crate::model::Model::submit_stream`]).
    pub response_sender: Option<ResponseSender>,
    /// A step of an ensemble request adds its compute durations here.
    pub(crate) compute_sink: Option<Arc<ComputeSink>>,
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
            response_sender: None,
            compute_sink: None,
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
        self.inputs.first().and_then(|t| t.shape.first()).map(|&d| d.max(0) as usize).unwrap_or(1)
    }
}

/// Triton's prefix for request errors.
pub fn log_prefix(id: &str) -> String {
    format!("[request id: {}] ", if id.is_empty() { "<id_unknown>" } else { id })
}

fn dims_string(dims: &[i64]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}

impl InferRequest {
    /// Checks the request against the model's config as Triton's `InferenceRequest::Normalize`
    /// does, with Triton's messages: outputs exist, the right inputs are present, batch size,
    /// datatypes, shapes and byte sizes agree.
    pub fn validate(&self, config: &ModelConfig) -> Result<()> {
        let model = &config.name;
        let prefix = log_prefix(&self.id);
        for out in &self.requested_outputs {
            if !config.output.iter().any(|o| o.name == out.name) {
                return Err(Error::invalid_arg(format!(
                    "unexpected inference output '{}' for model '{}'",
                    out.name, model
                )));
            }
        }
        let required = config.input.iter().filter(|i| !i.optional).count();
        if self.inputs.len() > config.input.len() || self.inputs.len() < required {
            let quote = |names: Vec<&str>| {
                let q: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
                format!("[{}]", q.join(","))
            };
            let missing = quote(
                config
                    .input
                    .iter()
                    .filter(|i| !i.optional && self.input(&i.name).is_none())
                    .map(|i| i.name.as_str())
                    .collect(),
            );
            let got = quote(self.inputs.iter().map(|t| t.name.as_str()).collect());
            let expected = if required == config.input.len() {
                format!("expected {} inputs", config.input.len())
            } else {
                format!("expected number of inputs between {} and {}", required, config.input.len())
            };
            return Err(Error::invalid_arg(format!(
                "{prefix}{expected} but got {} inputs for model '{model}'. Got input(s) {got}, but missing required input(s) {missing}. Please provide all required input(s).",
                self.inputs.len()
            )));
        }
        let batching = config.max_batch_size > 0;
        let mut batch_size: Option<i64> = None;
        for t in &self.inputs {
            let Some(ic) = config.input.iter().find(|i| i.name == t.name) else {
                return Err(Error::invalid_arg(format!(
                    "unexpected inference input '{}' for model '{}'",
                    t.name, model
                )));
            };
            if batching && !ic.is_shape_tensor {
                let Some(&b) = t.shape.first() else {
                    return Err(Error::invalid_arg(format!(
                        "{prefix}input '{}' has no shape but model requires batch dimension for '{model}'",
                        t.name
                    )));
                };
                match batch_size {
                    None => batch_size = Some(b),
                    Some(bs) if bs != b => {
                        return Err(Error::invalid_arg(format!(
                            "{prefix}input '{}' batch size does not match other inputs for '{model}'",
                            t.name
                        )))
                    }
                    _ => {}
                }
            }
        }
        if batch_size.unwrap_or(0) > i64::from(config.max_batch_size) {
            return Err(Error::invalid_arg(format!(
                "{prefix}inference request batch-size must be <= {} for '{model}'",
                config.max_batch_size
            )));
        }
        for t in &self.inputs {
            let ic = config.input.iter().find(|i| i.name == t.name).expect("checked above");
            let expected_type = DataType::from_config(ic.data_type);
            if expected_type != Some(t.datatype) {
                return Err(Error::invalid_arg(format!(
                    "{prefix}inference input '{}' data-type is '{}', but model '{model}' expects '{}'",
                    t.name,
                    t.datatype.as_str(),
                    expected_type.map(|d| d.as_str()).unwrap_or("INVALID")
                )));
            }
            let dims = if batching && !ic.is_shape_tensor { &t.shape[1..] } else { &t.shape[..] };
            let mut matches = dims.len() == ic.dims.len();
            if matches {
                for (&got, &want) in dims.iter().zip(&ic.dims) {
                    if got == -1 {
                        return Err(Error::invalid_arg(format!(
                            "{prefix}All input dimensions should be specified for input '{}' for model '{model}', got {}",
                            t.name,
                            dims_string(&t.shape)
                        )));
                    }
                    if want != -1 && want != got {
                        matches = false;
                        break;
                    }
                }
            }
            if !matches {
                let mut full = Vec::new();
                let mut note = "";
                if batching {
                    full.push(-1);
                    note = "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be prepended to each input shape. If you want to specify the full shape including the batch dim in your input dims config, try setting max_batch_size to zero. See the model configuration docs for more info on max_batch_size.";
                }
                full.extend_from_slice(&ic.dims);
                return Err(Error::invalid_arg(format!(
                    "{prefix}unexpected shape for input '{}' for model '{model}'. Expected {}, got {}. {note}",
                    t.name,
                    dims_string(&full),
                    dims_string(&t.shape)
                )));
            }
            self.validate_data(t, &prefix, model)?;
        }
        Ok(())
    }

    fn validate_data(&self, t: &Tensor, prefix: &str, model: &str) -> Result<()> {
        let count = element_count(&t.shape).ok_or_else(|| {
            Error::invalid_arg(format!(
                "{prefix}invalid shape {} for input '{}'",
                dims_string(&t.shape),
                t.name
            ))
        })?;
        match t.datatype.byte_size() {
            Some(size) => {
                let expected = count.checked_mul(size).unwrap_or(usize::MAX);
                if expected != t.data.len() {
                    return Err(Error::invalid_arg(format!(
                        "{prefix}input byte size mismatch for input '{}' for model '{model}'. Expected {expected}, got {}",
                        t.name,
                        t.data.len()
                    )));
                }
            }
            None => {
                let mut found = 0usize;
                for e in bytes_elements(&t.data) {
                    if e.is_err() {
                        return Err(Error::invalid_arg(format!(
                            "{prefix}incomplete string length indicator for inference input '{}' for model '{model}', expecting 4 bytes but only fewer bytes available. Please make sure the string length indicator is in one buffer.",
                            t.name
                        )));
                    }
                    found += 1;
                    if found > count {
                        return Err(Error::invalid_arg(format!(
                            "{prefix}unexpected number of string elements {found} for inference input '{}' for model '{model}', expecting {count}",
                            t.name
                        )));
                    }
                }
                if found != count {
                    return Err(Error::invalid_arg(format!(
                        "{prefix}expected {count} string elements for inference input '{}' for model '{model}', got {found}",
                        t.name
                    )));
                }
            }
        }
        Ok(())
    }
}

impl InferRequest {
    /// Moves the parameters Triton reserves (`sequence_id`, `sequence_start`, `sequence_end`,
    /// `priority`, `timeout`) into their fields; the rest stay for the backend.
    pub fn apply_parameters(&mut self, mut parameters: Parameters) -> Result<()> {
        fn expect_bool(name: &str, v: ParamValue) -> Result<bool> {
            match v {
                ParamValue::Bool(b) => Ok(b),
                _ => Err(Error::invalid_arg(format!("parameter '{name}' must be a boolean"))),
            }
        }
        fn expect_uint(name: &str, v: ParamValue) -> Result<u64> {
            match v {
                ParamValue::Uint(u) => Ok(u),
                ParamValue::Int(i) if i >= 0 => Ok(i as u64),
                _ => Err(Error::invalid_arg(format!("parameter '{name}' must be a non-negative integer"))),
            }
        }
        if let Some(v) = parameters.remove("sequence_id") {
            self.correlation_id = match v {
                ParamValue::String(s) => CorrelationId::String(s),
                ParamValue::Uint(u) => CorrelationId::Uint(u),
                ParamValue::Int(i) if i >= 0 => CorrelationId::Uint(i as u64),
                _ => {
                    return Err(Error::invalid_arg(
                        "parameter 'sequence_id' must be a non-negative integer or a string",
                    ))
                }
            };
        }
        if let Some(v) = parameters.remove("sequence_start") {
            self.sequence_start = expect_bool("sequence_start", v)?;
        }
        if let Some(v) = parameters.remove("sequence_end") {
            self.sequence_end = expect_bool("sequence_end", v)?;
        }
        if let Some(v) = parameters.remove("priority") {
            self.priority = expect_uint("priority", v)?;
        }
        if let Some(v) = parameters.remove("timeout") {
            self.timeout_us = expect_uint("timeout", v)?;
        }
        self.parameters = parameters;
        Ok(())
    }
}

/// A model version from the wire: empty means "let the policy choose".
pub fn parse_version(s: &str) -> Result<Option<i64>> {
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<i64>() {
        Ok(v) if v > 0 => Ok(Some(v)),
        _ => Err(Error::invalid_arg(format!(
            "failed to get model version from specified version string '{s}' (details: stoll), version should be an integral value > 0"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_parameters_are_taken_out() {
        let mut r = InferRequest::new("m", None);
        let mut p = Parameters::new();
        p.insert("sequence_id".into(), ParamValue::String("abc".into()));
        p.insert("sequence_start".into(), ParamValue::Bool(true));
        p.insert("priority".into(), ParamValue::Int(2));
        p.insert("custom".into(), ParamValue::Double(1.5));
        r.apply_parameters(p).unwrap();
        assert_eq!(r.correlation_id, CorrelationId::String("abc".into()));
        assert!(r.sequence_start && !r.sequence_end);
        assert_eq!(r.priority, 2);
        assert_eq!(r.parameters.len(), 1);
        let mut bad = Parameters::new();
        bad.insert("sequence_end".into(), ParamValue::Int(1));
        assert!(r.apply_parameters(bad).is_err());
    }

    #[test]
    fn versions_from_the_wire() {
        assert_eq!(parse_version("").unwrap(), None);
        assert_eq!(parse_version("3").unwrap(), Some(3));
        assert!(parse_version("x").is_err());
        assert!(parse_version("0").is_err());
    }
}
