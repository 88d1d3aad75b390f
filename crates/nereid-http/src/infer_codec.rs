//! The inference request and response bodies: JSON with the binary tensor extension.
//!
//! A request body is a JSON header, optionally followed by binary input data; its length
//! is given by `Inference-Header-Content-Length`. Inputs with `binary_data_size` take
//! their bytes from the binary part, in order. A body without that header and with
//! `Content-Type: application/octet-stream` is the raw data of the model's single input.

use bytes::Bytes;
use nereid_core::infer_request::{InferRequest, ParamValue, Parameters, RequestedOutput};
use nereid_core::infer_response::InferResponse;
use nereid_core::tensor::{element_count, DataType, Tensor};
use nereid_core::{Error, Result};
use serde_json::{json, Map, Value};

use crate::json_data;

/// How the client wants the response's outputs encoded.
#[derive(Debug, Default)]
pub struct OutputEncoding {
    /// `binary_data_output` for outputs not listed in the request.
    pub default_binary: bool,
    /// Outputs listed with their own `binary_data` choice.
    pub binary: Vec<(String, bool)>,
}

impl OutputEncoding {
    fn is_binary(&self, name: &str) -> bool {
        self.binary.iter().find(|(n, _)| n == name).map_or(self.default_binary, |(_, b)| *b)
    }
}

fn parse_err(what: &str) -> Error {
    Error::invalid_arg(format!("Unable to parse '{what}'"))
}

/// Decodes a request body into the core's request.
pub fn decode(model: &str, version: Option<i64>, body: Bytes, header_length: Option<usize>) -> Result<(InferRequest, OutputEncoding)> {
    let (header, mut binary) = match header_length {
        Some(n) => {
            if n > body.len() {
                return Err(Error::invalid_arg(format!(
                    "inference header size should be in range (0, {}), got: {n}",
                    body.len()
                )));
            }
            (body.slice(..n), body.slice(n..))
        }
        None => (body, Bytes::new()),
    };
    let json: Value = serde_json::from_slice(&header)
        .map_err(|e| Error::invalid_arg(format!("failed to parse the request JSON buffer: {e}")))?;
    let obj = json.as_object().ok_or_else(|| Error::invalid_arg("failed to parse the request JSON buffer: not an object"))?;
    let mut request = InferRequest::new(model, version);
    if let Some(id) = obj.get("id") {
        request.id = id.as_str().ok_or_else(|| parse_err("id"))?.to_string();
    }
    let mut encoding = OutputEncoding::default();
    let mut parameters = Parameters::new();
    if let Some(params) = obj.get("parameters") {
        let params = params.as_object().ok_or_else(|| Error::invalid_arg("failed to get request params."))?;
        for (key, v) in params {
            match key.as_str() {
                "binary_data_output" => encoding.default_binary = v.as_bool().ok_or_else(|| parse_err(key))?,
                "sequence_id" => {
                    let id = v.as_u64().map(ParamValue::Uint).or_else(|| v.as_str().map(|s| ParamValue::String(s.into())));
                    parameters.insert(key.clone(), id.ok_or_else(|| parse_err(key))?);
                }
                "sequence_start" | "sequence_end" => {
                    parameters.insert(key.clone(), ParamValue::Bool(v.as_bool().ok_or_else(|| parse_err(key))?));
                }
                "priority" | "timeout" => {
                    parameters.insert(key.clone(), ParamValue::Uint(v.as_u64().ok_or_else(|| parse_err(key))?));
                }
                k if k.starts_with("triton_") => {
                    return Err(Error::invalid_arg(
                        "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified.",
                    ))
                }
                _ => {
                    parameters.insert(key.clone(), json_parameter(key, v)?);
                }
            }
        }
    }
    request.apply_parameters(parameters)?;
    let inputs = obj.get("inputs").and_then(Value::as_array).ok_or_else(|| parse_err("inputs"))?;
    for input in inputs {
        let tensor = decode_input(model, input, &mut binary)?;
        if request.input(&tensor.name).is_some() {
            return Err(Error::invalid_arg(format!("input '{}' already exists in request", tensor.name)));
        }
        request.inputs.push(tensor);
    }
    if !binary.is_empty() {
        return Err(Error::invalid_arg(format!("unexpected additional input data for model '{model}'")));
    }
    if let Some(outputs) = obj.get("outputs") {
        for output in outputs.as_array().ok_or_else(|| parse_err("outputs"))? {
            let name = output.get("name").and_then(Value::as_str).ok_or_else(|| parse_err("name"))?;
            let params = output.get("parameters").and_then(Value::as_object);
            let class_count = match params.and_then(|p| p.get("classification")) {
                Some(c) => u32::try_from(c.as_u64().ok_or_else(|| Error::invalid_arg("Unable to set 'classification'"))?)
                    .map_err(|_| Error::invalid_arg("Unable to set 'classification'"))?,
                None => 0,
            };
            if let Some(shm) = params.and_then(|p| p.get("shared_memory_region")) {
                return Err(shared_memory_unsupported(shm));
            }
            if let Some(b) = params.and_then(|p| p.get("binary_data")) {
                encoding.binary.push((name.to_string(), b.as_bool().ok_or_else(|| parse_err("binary_data"))?));
            }
            request.requested_outputs.push(RequestedOutput { name: name.to_string(), class_count });
        }
    }
    Ok((request, encoding))
}

fn shared_memory_unsupported(region: &Value) -> Error {
    Error::unsupported(format!("shared memory region {region}: shared memory is not supported yet"))
}

fn json_parameter(key: &str, v: &Value) -> Result<ParamValue> {
    Ok(match v {
        Value::Bool(b) => ParamValue::Bool(*b),
        Value::String(s) => ParamValue::String(s.clone()),
        Value::Number(n) if n.is_i64() => ParamValue::Int(n.as_i64().expect("checked")),
        Value::Number(n) if n.is_u64() => ParamValue::Uint(n.as_u64().expect("checked")),
        Value::Number(n) => ParamValue::Double(n.as_f64().unwrap_or_default()),
        _ => return Err(Error::invalid_arg(format!("parameter '{key}' has invalid type. It should be either 'int', 'bool', or 'string'."))),
    })
}

fn decode_input(model: &str, input: &Value, binary: &mut Bytes) -> Result<Tensor> {
    let name = input.get("name").and_then(Value::as_str).ok_or_else(|| parse_err("name"))?;
    let datatype_str = input.get("datatype").and_then(Value::as_str).ok_or_else(|| parse_err("datatype"))?;
    let shape: Vec<i64> = input
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| parse_err("shape"))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| i64::try_from(d).ok()).ok_or_else(|| parse_err("shape")))
        .collect::<Result<_>>()?;
    let datatype = DataType::parse(datatype_str).ok_or_else(|| {
        Error::invalid_arg(format!("invalid datatype '{datatype_str}' for input '{name}'"))
    })?;
    let params = input.get("parameters").and_then(Value::as_object);
    if let Some(shm) = params.and_then(|p| p.get("shared_memory_region")) {
        return Err(shared_memory_unsupported(shm));
    }
    let data = match params.and_then(|p| p.get("binary_data_size")) {
        Some(size) => {
            if input.get("data").is_some() {
                return Err(Error::invalid_arg(format!(
                    "Input '{name}' has both 'data' and 'binary_data_size' fields, only one of these may be specified"
                )));
            }
            let size = size.as_u64().ok_or_else(|| parse_err("binary_data_size"))?;
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > binary.len() {
                return Err(Error::invalid_arg(format!(
                    "unexpected size for input '{name}', expecting {} additional bytes for model '{model}'",
                    size - binary.len()
                )));
            }
            binary.split_to(size)
        }
        None => {
            let data = input.get("data").ok_or_else(|| {
                Error::invalid_arg(format!(
                    "must specify one of 'data', 'binary_data_size', or 'shared_memory_region' for input '{name}'"
                ))
            })?;
            if element_count(&shape).is_none() {
                return Err(Error::invalid_arg(format!(
                    "invalid shape for input '{name}': shape {shape:?} contains one or more invalid dimensions"
                )));
            }
            Bytes::from(json_data::to_bytes(name, datatype, data)?)
        }
    };
    Ok(Tensor { name: name.to_string(), datatype, shape, data })
}

/// Wraps a raw body (no JSON header) as the model's only input.
pub fn decode_raw(request: &mut InferRequest, input: &nereid_core::proto::inference::ModelInput, batching: bool, body: Bytes) -> Result<()> {
    let datatype = DataType::from_config(input.data_type).ok_or_else(|| Error::invalid_arg("invalid input datatype"))?;
    let mut shape: Vec<i64> = batching.then_some(1).into_iter().chain(input.dims.iter().copied()).collect();
    let data = if datatype == DataType::Bytes {
        nereid_core::tensor::serialize_bytes([&body[..]]).into()
    } else {
        let wildcard: Vec<usize> = shape.iter().enumerate().filter(|(_, &d)| d == -1).map(|(i, _)| i).collect();
        if wildcard.len() > 1 {
            return Err(Error::invalid_arg(format!(
                "{}The shape of the raw input '{}' can not be deduced because there are more than one variable-sized dimension",
                nereid_core::infer_request::log_prefix(&request.id),
                input.name
            )));
        }
        if let Some(&axis) = wildcard.first() {
            let fixed: i64 = shape.iter().filter(|&&d| d != -1).product();
            let size = datatype.byte_size().unwrap_or(1) as i64;
            shape[axis] = body.len() as i64 / fixed.max(1) / size;
        }
        body
    };
    request.inputs.push(Tensor { name: input.name.clone(), datatype, shape, data });
    Ok(())
}

/// Encodes a response: the JSON header, and the binary outputs to send after it.
pub fn encode(response: InferResponse, encoding: &OutputEncoding) -> (Vec<u8>, Vec<Bytes>) {
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut binary = Vec::new();
    for t in response.outputs {
        let mut o = Map::new();
        o.insert("name".into(), Value::String(t.name.clone()));
        o.insert("datatype".into(), Value::String(t.datatype.as_str().into()));
        o.insert("shape".into(), json!(t.shape));
        if encoding.is_binary(&t.name) {
            o.insert("parameters".into(), json!({ "binary_data_size": t.data.len() }));
            binary.push(t.data);
        } else {
            o.insert("data".into(), json_data::to_json(t.datatype, &t.data));
        }
        outputs.push(Value::Object(o));
    }
    let mut root = Map::new();
    if !response.id.is_empty() {
        root.insert("id".into(), Value::String(response.id));
    }
    root.insert("model_name".into(), Value::String(response.model_name));
    root.insert("model_version".into(), Value::String(response.model_version.to_string()));
    root.insert("outputs".into(), Value::Array(outputs));
    (serde_json::to_vec(&Value::Object(root)).expect("JSON of plain values"), binary)
}
