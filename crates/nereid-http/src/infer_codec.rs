//! The inference request and response bodies: JSON with the binary tensor extension.
//!
//! A request body is a JSON header, optionally followed by binary input data; its length
//! is given by `Inference-Header-Content-Length`. Inputs with `binary_data_size` take
//! their bytes from the binary part, in order. A body without that header and with
//! `Content-Type: application/octet-stream` is the raw data of the model's single input.

use bytes::Bytes;
use nereid_core::infer_request::{InferRequest, ParamValue, Parameters, RequestedOutput};
use nereid_core::infer_response::InferResponse;
use nereid_core::shared_memory_manager::{RequestRegions, SharedMemoryManager};
use nereid_core::tensor::{DataType, Tensor};
use nereid_core::{Error, Result};
use serde_json::{json, Map, Value};

use crate::json_data;
use crate::shared_memory::region_slice;
use crate::triton_json::{self, array, boolean, member, string, unable, unsigned};

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

/// Triton's `--http-max-input-size` default: the largest tensor a JSON `data` array may describe.
const MAX_JSON_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Decodes a request body (JSON header, then binary data) into the core's request and the
/// shared memory regions it reads and writes, checking in Triton's order with Triton's messages.
pub fn decode(
    model: &str,
    version: Option<i64>,
    body: Bytes,
    header_length: Option<usize>,
    shm: &SharedMemoryManager,
) -> Result<(InferRequest, OutputEncoding, RequestRegions)> {
    let (header, mut binary) = match header_length {
        Some(n) => (body.slice(..n), body.slice(n..)),
        None => (body, Bytes::new()),
    };
    let json = triton_json::parse(&header)?;
    let mut request = InferRequest::new(model, version);
    let mut regions = RequestRegions::default();
    let inputs = member(&json, "inputs").and_then(array).map_err(unable("inputs"))?;
    for input in inputs {
        let tensor = decode_input(model, input, &mut binary, header_length.is_some(), shm, &mut regions)?;
        if request.input(&tensor.name).is_some() {
            return Err(Error::invalid_arg(format!("input '{}' already exists in request", tensor.name)));
        }
        request.inputs.push(tensor);
    }
    if !binary.is_empty() {
        return Err(Error::invalid_arg(format!("unexpected additional input data for model '{model}'")));
    }
    let mut encoding = OutputEncoding::default();
    if let Some(outputs) = json.get("outputs") {
        for output in array(outputs).map_err(unable("outputs"))? {
            let (requested, binary) = decode_output(output, shm, &mut regions)?;
            if let Some(b) = binary {
                encoding.binary.push((requested.name.clone(), b));
            }
            request.requested_outputs.push(requested);
        }
    }
    if let Some(params) = json.get("parameters") {
        let params = params.as_object().ok_or_else(|| Error::internal("failed to get request params."))?;
        let mut parameters = Parameters::new();
        for (key, v) in params {
            let value = match key.as_str() {
                "binary_data_output" => {
                    encoding.default_binary = boolean(v).map_err(unable(key))?;
                    continue;
                }
                "sequence_id" => match (v.as_u64(), v.as_str()) {
                    (Some(u), _) => ParamValue::Uint(u),
                    (_, Some(s)) => ParamValue::String(s.into()),
                    _ => return Err(unable(key)(string(v).unwrap_err())),
                },
                "sequence_start" | "sequence_end" => ParamValue::Bool(boolean(v).map_err(unable(key))?),
                "priority" | "timeout" => ParamValue::Uint(unsigned(v).map_err(unable(key))?),
                k if k.starts_with("triton_") => {
                    return Err(Error::invalid_arg(
                        "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified.",
                    ))
                }
                _ => json_parameter(key, v)?,
            };
            parameters.insert(key.clone(), value);
        }
        request.apply_parameters(parameters)?;
    }
    if let Some(id) = json.get("id") {
        request.id = string(id).map_err(unable("id"))?.to_string();
    }
    Ok((request, encoding, regions))
}

fn json_parameter(key: &str, v: &Value) -> Result<ParamValue> {
    Ok(match v {
        Value::Bool(b) => ParamValue::Bool(*b),
        Value::String(s) => ParamValue::String(s.clone()),
        Value::Number(n) if n.is_i64() => ParamValue::Int(n.as_i64().expect("checked")),
        Value::Number(n) if n.is_u64() => ParamValue::Uint(n.as_u64().expect("checked")),
        Value::Number(n) => ParamValue::Double(n.as_f64().unwrap_or_default()),
        _ => {
            return Err(Error::invalid_arg(format!(
                "parameter '{key}' has invalid type. It should be either 'int', 'bool', or 'string'."
            )))
        }
    })
}

/// Triton's `ValidateInputContentType`: exactly one source of data per input.
fn check_one_data_source(input: &Value) -> Result<()> {
    let params = input.get("parameters");
    let found: Vec<&str> = [
        ("data", input.get("data").is_some()),
        ("binary_data_size", params.and_then(|p| p.get("binary_data_size")).is_some()),
        ("shared_memory_region", params.and_then(|p| p.get("shared_memory_region")).is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if found.len() == 1 {
        return Ok(());
    }
    let detail = if found.is_empty() {
        " no field is set".to_string()
    } else {
        format!(" set {}", found.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(" "))
    };
    Err(Error::invalid_arg(format!(
        "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'. But{detail}"
    )))
}

fn decode_input(
    model: &str,
    input: &Value,
    binary: &mut Bytes,
    has_binary_part: bool,
    shm: &SharedMemoryManager,
    regions: &mut RequestRegions,
) -> Result<Tensor> {
    check_one_data_source(input)?;
    let name = member(input, "name").and_then(string).map_err(unable("name"))?;
    let datatype_str = member(input, "datatype").and_then(string).map_err(unable("datatype"))?;
    let shape = member(input, "shape").and_then(array).map_err(unable("shape"))?;
    let shape: Vec<u64> = shape.iter().map(unsigned).collect::<Result<_, _>>().map_err(unable("shape"))?;
    let datatype = DataType::parse(datatype_str)
        .ok_or_else(|| Error::invalid_arg(format!("invalid datatype '{datatype_str}' for input '{name}'")))?;
    let shape_text = || format!("[{}]", shape.iter().map(u64::to_string).collect::<Vec<_>>().join(","));
    let count = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).filter(|&c| c <= i64::MAX as u64);
    let shape_i64: Vec<i64> = shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect();
    let params = input.get("parameters");
    let data = match (region_slice(params)?, params.and_then(|p| p.get("binary_data_size"))) {
        (Some((region, offset, byte_size)), _) => shm.input(regions, region, offset, byte_size)?,
        (None, Some(size)) => {
            let size = unsigned(size).map_err(unable("binary_data_size"))?;
            if size > 0 && !has_binary_part {
                return Err(Error::invalid_arg(
                    "must specify valid 'Infer-Header-Content-Length' in request header and 'binary_data_size' when passing inputs in binary data format",
                ));
            }
            if size > binary.len() as u64 {
                return Err(Error::invalid_arg(format!(
                    "unexpected size for input '{name}', expecting {} additional bytes for model '{model}'",
                    size - binary.len() as u64
                )));
            }
            binary.split_to(size as usize)
        }
        (None, None) => {
            let count = count.ok_or_else(|| {
                Error::invalid_arg(format!(
                    "invalid shape for input '{name}': shape {} causes total element count to exceed maximum size of {}",
                    shape_text(),
                    i64::MAX
                ))
            })?;
            if let Some(size) = datatype.byte_size() {
                let bytes = count.saturating_mul(size as u64);
                if bytes > MAX_JSON_INPUT_BYTES {
                    return Err(Error::invalid_arg(format!(
                        "JSON input '{name}' has a byte_size ({bytes} bytes) that exceeds the maximum allowed value of {MAX_JSON_INPUT_BYTES} bytes. Use --http-max-input-size to increase the limit."
                    )));
                }
            }
            let data = member(input, "data").map_err(unable("data"))?;
            Bytes::from(json_data::to_bytes(name, datatype, data, count as usize)?)
        }
    };
    Ok(Tensor { name: name.to_string(), datatype, shape: shape_i64, data })
}

/// A requested output, and its own `binary_data` choice if it makes one; an output that goes to
/// a shared memory region is added to `regions`.
fn decode_output(
    output: &Value,
    shm: &SharedMemoryManager,
    regions: &mut RequestRegions,
) -> Result<(RequestedOutput, Option<bool>)> {
    let params = output.get("parameters");
    let param = |key: &str| params.and_then(|p| p.get(key));
    if param("shared_memory_region").is_some() {
        if param("classification").is_some() {
            return Err(Error::invalid_arg(
                "Output can't set both 'shared_memory_region' and 'classification'",
            ));
        }
        if let Some(b) = param("binary_data") {
            if boolean(b).map_err(|e| Error::internal(format!("Unable to set 'binary_data': {e}")))? {
                return Err(Error::invalid_arg(
                    "Output can't set both 'shared_memory_region' and 'binary_data'",
                ));
            }
        }
    }
    let name = member(output, "name").and_then(string).map_err(unable("name"))?;
    let class_count = match param("classification") {
        Some(c) => {
            let n =
                unsigned(c).map_err(|e| Error::internal(format!("Unable to set 'classification': {e}")))?;
            u32::try_from(n)
                .map_err(|_| Error::invalid_arg("Unable to set 'classification': value too large"))?
        }
        None => 0,
    };
    if let Some((region, offset, byte_size)) = region_slice(params)? {
        shm.output(regions, name, region, offset, byte_size)?;
    }
    let binary = param("binary_data").map(|b| boolean(b).map_err(unable("binary_data"))).transpose()?;
    Ok((RequestedOutput { name: name.to_string(), class_count }, binary))
}

/// Wraps a raw body (no JSON header) as the model's only input.
pub fn decode_raw(
    request: &mut InferRequest,
    input: &nereid_core::proto::inference::ModelInput,
    batching: bool,
    body: Bytes,
) -> Result<()> {
    let datatype =
        DataType::from_config(input.data_type).ok_or_else(|| Error::invalid_arg("invalid input datatype"))?;
    let mut shape: Vec<i64> = batching.then_some(1).into_iter().chain(input.dims.iter().copied()).collect();
    let data = if datatype == DataType::Bytes {
        nereid_core::tensor::serialize_bytes([&body[..]]).into()
    } else {
        let wildcard: Vec<usize> =
            shape.iter().enumerate().filter(|(_, &d)| d == -1).map(|(i, _)| i).collect();
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

/// Encodes a response: the JSON header, and the binary outputs to send after it. Outputs
/// written to shared memory carry no data, as in Triton.
pub fn encode(response: InferResponse, encoding: &OutputEncoding, regions: &RequestRegions) -> (Vec<u8>, Vec<Bytes>) {
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut binary = Vec::new();
    for t in response.outputs {
        let mut o = Map::new();
        o.insert("name".into(), Value::String(t.name.clone()));
        o.insert("datatype".into(), Value::String(t.datatype.as_str().into()));
        o.insert("shape".into(), json!(t.shape));
        // An output written to shared memory has neither.
        if !regions.has_output(&t.name) {
            if encoding.is_binary(&t.name) {
                o.insert("parameters".into(), json!({ "binary_data_size": t.data.len() }));
                binary.push(t.data);
            } else {
                o.insert("data".into(), json_data::to_json(t.datatype, &t.data));
            }
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
