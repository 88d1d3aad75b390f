//! Requests and responses as the server and a stub exchange them (tensors go through
//! [`Transfer`]). Errors carry Triton's error codes, as `pb_utils.TritonError` numbers them.

use nereid_core::infer_request::{CorrelationId, InferRequest, ParamValue, Parameters, RequestedOutput};
use nereid_core::infer_response::InferResponse;
use nereid_core::tensor::Tensor;
use nereid_core::{Code, Error, Result};
use serde_json::{json, Map, Value};

use crate::arena::Block;
use crate::tensors::Transfer;

const SEQUENCE_START: u64 = 1;
const SEQUENCE_END: u64 = 2;

/// A request for the stub's `execute`, and the blocks holding its inputs. With no requested
/// outputs, the model's `outputs` are requested, as Triton's core does.
pub fn request(transfer: &Transfer, request: &InferRequest, outputs: &[String]) -> Result<(Value, Vec<Block>)> {
    let mut blocks = Vec::new();
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for tensor in &request.inputs {
        let (wire, block) = transfer.send(tensor)?;
        inputs.push(wire);
        blocks.extend(block);
    }
    let requested: Vec<&str> = if request.requested_outputs.is_empty() {
        outputs.iter().map(String::as_str).collect()
    } else {
        request.requested_outputs.iter().map(|o| o.name.as_str()).collect()
    };
    let correlation_id = match &request.correlation_id {
        CorrelationId::None => json!(0),
        CorrelationId::Uint(id) => json!(id),
        CorrelationId::String(id) => json!(id),
    };
    let flags = u64::from(request.sequence_start) * SEQUENCE_START + u64::from(request.sequence_end) * SEQUENCE_END;
    let wire = json!({
        "id": request.id,
        "correlation_id": correlation_id,
        "flags": flags,
        "timeout": request.timeout_us,
        "parameters": parameters_to_json(&request.parameters),
        "inputs": inputs,
        "outputs": requested,
    });
    Ok((wire, blocks))
}

/// A response from the stub: its outputs and parameters, or its error. `inputs` are those of
/// the request it answers.
pub fn response(transfer: &Transfer, wire: &Value, inputs: &[Tensor]) -> Result<(Vec<Tensor>, Parameters)> {
    if let Some(error) = wire.get("error") {
        return Err(error_from(error));
    }
    let outputs = wire["outputs"].as_array().map(Vec::as_slice).unwrap_or_default();
    let tensors = outputs.iter().map(|t| transfer.receive(t, inputs)).collect::<Result<_>>()?;
    Ok((tensors, parameters_from_json(&wire["parameters"])))
}

/// A BLS request from the stub, for the server.
pub fn bls_request(transfer: &Transfer, wire: &Value) -> Result<InferRequest> {
    let model = wire["model"].as_str().ok_or_else(|| Error::invalid_arg("a BLS request needs a model name"))?;
    let version = wire["version"].as_i64().filter(|v| *v > 0);
    let mut request = InferRequest::new(model, version);
    request.id = wire["id"].as_str().unwrap_or_default().to_string();
    request.apply_parameters(parameters_from_json(&wire["parameters"]))?;
    request.correlation_id = match &wire["correlation_id"] {
        Value::String(id) => CorrelationId::String(id.clone()),
        id => id.as_u64().filter(|id| *id != 0).map_or(CorrelationId::None, CorrelationId::Uint),
    };
    let flags = wire["flags"].as_u64().unwrap_or(0);
    request.sequence_start = flags & SEQUENCE_START != 0;
    request.sequence_end = flags & SEQUENCE_END != 0;
    request.timeout_us = wire["timeout"].as_u64().unwrap_or(0);
    for input in wire["inputs"].as_array().into_iter().flatten() {
        request.inputs.push(transfer.receive(input, &[])?);
    }
    for name in wire["outputs"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        request.requested_outputs.push(RequestedOutput { name: name.to_string(), class_count: 0 });
    }
    Ok(request)
}

/// A BLS response for the stub, and the blocks it lends the stub.
pub fn bls_response(transfer: &Transfer, response: &InferResponse) -> Result<(Value, Vec<Block>)> {
    let mut blocks = Vec::new();
    let mut outputs = Vec::with_capacity(response.outputs.len());
    for tensor in &response.outputs {
        let (wire, block) = transfer.send(tensor)?;
        outputs.push(wire);
        blocks.extend(block);
    }
    Ok((json!({"outputs": outputs, "parameters": parameters_to_json(&response.parameters)}), blocks))
}

pub fn error_to(error: &Error) -> Value {
    let code = match error.code {
        Code::Unknown => 0,
        Code::Internal => 1,
        Code::NotFound => 2,
        Code::InvalidArg => 3,
        Code::Unavailable => 4,
        Code::Unsupported => 5,
        Code::AlreadyExists => 6,
        Code::Cancelled => 7,
    };
    json!({"code": code, "message": error.message})
}

pub fn error_from(wire: &Value) -> Error {
    let code = match wire["code"].as_u64() {
        Some(0) => Code::Unknown,
        Some(2) => Code::NotFound,
        Some(3) => Code::InvalidArg,
        Some(4) => Code::Unavailable,
        Some(5) => Code::Unsupported,
        Some(6) => Code::AlreadyExists,
        Some(7) => Code::Cancelled,
        _ => Code::Internal,
    };
    Error::new(code, wire["message"].as_str().unwrap_or("the Python model failed"))
}

pub fn parameters_to_json(parameters: &Parameters) -> Value {
    let object: Map<String, Value> = parameters
        .iter()
        .map(|(key, value)| {
            let value = match value {
                ParamValue::Bool(b) => json!(b),
                ParamValue::Int(i) => json!(i),
                ParamValue::Uint(u) => json!(u),
                ParamValue::Double(d) => json!(d),
                ParamValue::String(s) => json!(s),
            };
            (key.clone(), value)
        })
        .collect();
    Value::Object(object)
}

pub fn parameters_from_json(wire: &Value) -> Parameters {
    let object = wire.as_object().into_iter().flatten();
    object
        .filter_map(|(key, value)| {
            let value = match value {
                Value::Bool(b) => ParamValue::Bool(*b),
                Value::String(s) => ParamValue::String(s.clone()),
                Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => ParamValue::Int(i),
                    (None, Some(u)) => ParamValue::Uint(u),
                    _ => ParamValue::Double(n.as_f64()?),
                },
                _ => return None,
            };
            Some((key.clone(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_codes() {
        for code in [Code::Unknown, Code::Internal, Code::NotFound, Code::InvalidArg, Code::Unavailable,
            Code::Unsupported, Code::AlreadyExists, Code::Cancelled]
        {
            let error = Error::new(code, "m");
            assert_eq!(error_from(&error_to(&error)), error);
        }
        assert_eq!(error_from(&json!({"message": "x"})).code, Code::Internal);
    }

    #[test]
    fn parameters_round_trip() {
        let mut parameters = Parameters::new();
        parameters.insert("b".into(), ParamValue::Bool(true));
        parameters.insert("i".into(), ParamValue::Int(-3));
        parameters.insert("d".into(), ParamValue::Double(0.5));
        parameters.insert("s".into(), ParamValue::String("x".into()));
        assert_eq!(parameters_from_json(&parameters_to_json(&parameters)), parameters);
        assert_eq!(parameters_from_json(&json!({"u": u64::MAX}))["u"], ParamValue::Uint(u64::MAX));
    }
}
