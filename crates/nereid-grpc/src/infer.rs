//! `ModelInferRequest` → core `InferRequest` and core `InferResponse` → `ModelInferResponse`,
//! with Triton's texts for what only the wire can get wrong (`infer_handler.cc`, `grpc_utils.cc`).

use std::collections::HashMap;
use std::future::Future;

use nereid_core::infer_request::{parse_version, InferRequest, ParamValue, Parameters, RequestedOutput};
use nereid_core::infer_response::InferResponse;
use nereid_core::server::InferenceServer;
use nereid_core::shared_memory_manager::{RequestRegions, SharedMemoryManager};
use nereid_core::tensor::{DataType, Tensor};
use nereid_core::{Error, Result};
use nereid_proto::inference::infer_parameter::ParameterChoice;
use nereid_proto::inference::model_infer_response::InferOutputTensor;
use nereid_proto::inference::{InferParameter, ModelInferRequest, ModelInferResponse};

use crate::shared_memory::{region_slice, RegionSlice};

/// Decodes, runs and encodes one ModelInfer request (not for decoupled models, as in Triton).
pub async fn run(server: &InferenceServer, request: ModelInferRequest) -> Result<ModelInferResponse> {
    if crate::decoupled::is_decoupled(server, &request) {
        return Err(Error::unsupported(
            "ModelInfer RPC doesn't support models with decoupled transaction policy",
        ));
    }
    submit(server, request).await
}

/// Converts and queues a request at once; the returned future waits for its response. A stream
/// submits its requests in arrival order this way, which sequences rely on.
pub fn submit(
    server: &InferenceServer,
    request: ModelInferRequest,
) -> impl Future<Output = Result<ModelInferResponse>> {
    let id = if request.id.is_empty() { "<id_unknown>".to_string() } else { request.id.clone() };
    let queued = to_core(server.shared_memory(), request)
        .and_then(|(request, regions)| Ok((server.submit(request)?, regions)));
    async move {
        let result = match queued {
            Ok((pending, regions)) => pending.await.and_then(|mut response| {
                regions.finish(&mut response)?;
                Ok(to_wire(response))
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            log::debug!("[request id: {id}] Infer failed: {e}");
        }
        result
    }
}

/// The core's request, and the shared memory regions it reads and writes.
pub fn to_core(shm: &SharedMemoryManager, wire: ModelInferRequest) -> Result<(InferRequest, RequestRegions)> {
    let model = wire.model_name;
    let mut regions = RequestRegions::default();
    let mut request = InferRequest::new(model.clone(), parse_version(&wire.model_version)?);
    request.id = wire.id;
    request.apply_parameters(to_params(wire.parameters)?)?;

    let raw_given = !wire.raw_input_contents.is_empty();
    // Raw contents go to the inputs without typed contents, in order; extras are ignored as in Triton.
    let mut raw = wire.raw_input_contents.into_iter();
    for input in wire.inputs {
        let slice = region_slice(&input.name, &input.parameters)?;
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            Error::invalid_arg(format!(
                "invalid datatype '{}' for input tensor '{}' for model '{model}'",
                input.datatype, input.name
            ))
        })?;
        let data = match (slice, &input.contents, raw_given) {
            (Some(_), Some(_), _) => {
                return Err(Error::invalid_arg(format!(
                    "unexpected 'content' provided when using shared memory for input tensor '{}' for model '{model}'",
                    input.name
                )))
            }
            (Some(RegionSlice { region, offset, byte_size }), None, _) => {
                shm.input(&mut regions, &region, offset, byte_size)?
            }
            (None, Some(_), true) => {
                return Err(Error::invalid_arg(format!(
                    "contents field must not be specified when using raw_input_contents for '{}' for model '{model}'",
                    input.name
                )))
            }
            (None, Some(contents), false) => {
                crate::contents::typed_to_bytes(&input.name, &model, datatype, contents)?.into()
            }
            (None, None, _) => raw
                .next()
                .ok_or_else(|| {
                    Error::invalid_arg(format!(
                        "unable to find data for input tensor '{}' for model '{model}' in request.",
                        input.name
                    ))
                })?
                .into(),
        };
        request.inputs.push(Tensor::new(input.name, datatype, input.shape, data));
    }

    for output in wire.outputs {
        let slice = region_slice(&output.name, &output.parameters)?;
        let class_count = classification(&output.parameters)?;
        if let Some(RegionSlice { region, offset, byte_size }) = slice {
            if class_count > 0 {
                return Err(Error::invalid_arg(
                    "output can't set both 'shared_memory_region' and 'classification'",
                ));
            }
            shm.output(&mut regions, &output.name, &region, offset, byte_size)?;
        }
        request.requested_outputs.push(RequestedOutput { name: output.name, class_count });
    }
    Ok((request, regions))
}

/// Triton's `ParseClassificationParams`: an int64 above zero (its text says ">= 0", its check is > 0).
fn classification(parameters: &HashMap<String, InferParameter>) -> Result<u32> {
    let Some(param) = parameters.get("classification") else {
        return Ok(0);
    };
    let Some(ParameterChoice::Int64Param(count)) = param.parameter_choice else {
        return Err(Error::invalid_arg(
            "invalid value type for 'classification' parameter, expected int64_param",
        ));
    };
    if count <= 0 {
        return Err(Error::invalid_arg("invalid value for 'classification' parameter, expected >= 0"));
    }
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}

pub fn to_params(wire: HashMap<String, InferParameter>) -> Result<Parameters> {
    wire.into_iter()
        .map(|(name, param)| {
            let value = match param.parameter_choice {
                Some(ParameterChoice::BoolParam(b)) => ParamValue::Bool(b),
                Some(ParameterChoice::Int64Param(i)) => ParamValue::Int(i),
                Some(ParameterChoice::Uint64Param(u)) => ParamValue::Uint(u),
                Some(ParameterChoice::DoubleParam(d)) => ParamValue::Double(d),
                Some(ParameterChoice::StringParam(s)) => ParamValue::String(s),
                None => {
                    return Err(Error::invalid_arg(format!(
                        "invalid value type for '{name}' parameter, expected int64_param, bool_param, or string_param."
                    )))
                }
            };
            Ok((name, value))
        })
        .collect()
}

pub fn to_wire_param(value: ParamValue) -> InferParameter {
    let choice = match value {
        ParamValue::Bool(b) => ParameterChoice::BoolParam(b),
        ParamValue::Int(i) => ParameterChoice::Int64Param(i),
        ParamValue::Uint(u) => ParameterChoice::Uint64Param(u),
        ParamValue::Double(d) => ParameterChoice::DoubleParam(d),
        ParamValue::String(s) => ParameterChoice::StringParam(s),
    };
    InferParameter { parameter_choice: Some(choice) }
}

/// Triton always answers with raw contents, one per output, in the outputs' order.
pub fn to_wire(response: InferResponse) -> ModelInferResponse {
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut raw = Vec::with_capacity(response.outputs.len());
    for t in response.outputs {
        outputs.push(InferOutputTensor {
            name: t.name,
            datatype: t.datatype.as_str().to_string(),
            shape: t.shape,
            ..Default::default()
        });
        raw.push(Vec::from(t.data));
    }
    ModelInferResponse {
        model_name: response.model_name,
        model_version: response.model_version.to_string(),
        id: response.id,
        parameters: response.parameters.into_iter().map(|(k, v)| (k, to_wire_param(v))).collect(),
        outputs,
        raw_output_contents: raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nereid_core::infer_request::CorrelationId;
    use nereid_core::Code;
    use nereid_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
    use nereid_proto::inference::InferTensorContents;

    fn param(choice: ParameterChoice) -> InferParameter {
        InferParameter { parameter_choice: Some(choice) }
    }

    fn input(name: &str, contents: Option<InferTensorContents>) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: "INT32".into(),
            shape: vec![1],
            contents,
            ..Default::default()
        }
    }

    /// A request through `to_core`, on a manager with no regions.
    fn core(wire: ModelInferRequest) -> Result<InferRequest> {
        to_core(&SharedMemoryManager::new(true), wire).map(|(request, _)| request)
    }

    fn request(inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> ModelInferRequest {
        ModelInferRequest { model_name: "m".into(), inputs, raw_input_contents: raw, ..Default::default() }
    }

    #[test]
    fn parameters_map_both_ways() {
        let wire = HashMap::from([
            ("b".to_string(), param(ParameterChoice::BoolParam(true))),
            ("i".to_string(), param(ParameterChoice::Int64Param(-4))),
            ("u".to_string(), param(ParameterChoice::Uint64Param(5))),
            ("d".to_string(), param(ParameterChoice::DoubleParam(0.5))),
            ("s".to_string(), param(ParameterChoice::StringParam("x".into()))),
        ]);
        let core = to_params(wire.clone()).unwrap();
        assert_eq!(core["b"], ParamValue::Bool(true));
        assert_eq!(core["i"], ParamValue::Int(-4));
        assert_eq!(core["u"], ParamValue::Uint(5));
        assert_eq!(core["d"], ParamValue::Double(0.5));
        assert_eq!(core["s"], ParamValue::String("x".into()));
        let back: HashMap<_, _> = core.into_iter().map(|(k, v)| (k, to_wire_param(v))).collect();
        assert_eq!(back, wire);
        let unset = HashMap::from([("p".to_string(), InferParameter::default())]);
        assert_eq!(
            to_params(unset).unwrap_err().message,
            "invalid value type for 'p' parameter, expected int64_param, bool_param, or string_param."
        );
    }

    #[test]
    fn request_fields_reach_the_core() {
        let mut wire =
            request(vec![input("a", None), input("b", None)], vec![vec![1, 0, 0, 0], vec![2, 0, 0, 0]]);
        wire.model_version = "2".into();
        wire.id = "r1".into();
        wire.parameters = HashMap::from([
            ("sequence_id".to_string(), param(ParameterChoice::Int64Param(7))),
            ("custom".to_string(), param(ParameterChoice::StringParam("v".into()))),
        ]);
        let classified =
            HashMap::from([("classification".to_string(), param(ParameterChoice::Int64Param(3)))]);
        wire.outputs = vec![
            InferRequestedOutputTensor { name: "o1".into(), parameters: classified },
            InferRequestedOutputTensor { name: "o2".into(), ..Default::default() },
        ];
        let r = core(wire).unwrap();
        assert_eq!((r.model_name.as_str(), r.model_version, r.id.as_str()), ("m", Some(2), "r1"));
        assert_eq!(r.correlation_id, CorrelationId::Uint(7));
        assert_eq!(r.parameters.len(), 1);
        assert_eq!(r.inputs[1], Tensor::new("b", DataType::Int32, vec![1], vec![2, 0, 0, 0]));
        let outs: Vec<_> = r.requested_outputs.iter().map(|o| (o.name.as_str(), o.class_count)).collect();
        assert_eq!(outs, [("o1", 3), ("o2", 0)]);
    }

    #[test]
    fn typed_contents_are_used_without_raw() {
        let typed = InferTensorContents { int_contents: vec![9], ..Default::default() };
        let r = core(request(vec![input("a", Some(typed))], vec![])).unwrap();
        assert_eq!(r.inputs[0].data.as_ref(), 9i32.to_le_bytes());
    }

    #[test]
    fn missing_or_mixed_data_gets_tritons_text() {
        let err = core(request(vec![input("a", None), input("b", None)], vec![vec![0; 4]])).unwrap_err();
        assert_eq!(err.message, "unable to find data for input tensor 'b' for model 'm' in request.");
        let typed = InferTensorContents { int_contents: vec![1], ..Default::default() };
        let err =
            core(request(vec![input("a", None), input("b", Some(typed))], vec![vec![0; 4]])).unwrap_err();
        assert_eq!(
            err.message,
            "contents field must not be specified when using raw_input_contents for 'b' for model 'm'"
        );
        let mut bad = input("a", None);
        bad.datatype = "FLOAT".into();
        assert_eq!(core(request(vec![bad], vec![vec![0; 4]])).unwrap_err().code, Code::InvalidArg);
    }

    #[test]
    fn classification_and_shared_memory_parameters() {
        let wrong =
            HashMap::from([("classification".to_string(), param(ParameterChoice::StringParam("2".into())))]);
        assert_eq!(
            classification(&wrong).unwrap_err().message,
            "invalid value type for 'classification' parameter, expected int64_param"
        );
        let zero = HashMap::from([("classification".to_string(), param(ParameterChoice::Int64Param(0)))]);
        assert_eq!(
            classification(&zero).unwrap_err().message,
            "invalid value for 'classification' parameter, expected >= 0"
        );
        let mut shm = input("a", None);
        shm.parameters.insert("shared_memory_region".into(), param(ParameterChoice::StringParam("r".into())));
        shm.parameters.insert("shared_memory_byte_size".into(), param(ParameterChoice::Int64Param(4)));
        // Shared memory inputs take no raw contents: the one given is left for nobody.
        let err = core(request(vec![shm.clone()], vec![vec![0; 4]])).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (Code::NotFound, "Unable to find shared memory region: 'r'"));
        shm.contents = Some(InferTensorContents { int_contents: vec![1], ..Default::default() });
        assert_eq!(
            core(request(vec![shm], vec![])).unwrap_err().message,
            "unexpected 'content' provided when using shared memory for input tensor 'a' for model 'm'"
        );
        let mut wire = request(vec![input("a", None)], vec![vec![0; 4]]);
        let mut both = HashMap::from([("classification".to_string(), param(ParameterChoice::Int64Param(2)))]);
        both.insert("shared_memory_region".into(), param(ParameterChoice::StringParam("r".into())));
        both.insert("shared_memory_byte_size".into(), param(ParameterChoice::Int64Param(4)));
        wire.outputs = vec![InferRequestedOutputTensor { name: "o".into(), parameters: both }];
        assert_eq!(
            core(wire).unwrap_err().message,
            "output can't set both 'shared_memory_region' and 'classification'"
        );
    }

    #[test]
    fn responses_carry_raw_contents_in_output_order() {
        let mut response =
            InferResponse { model_name: "m".into(), model_version: 3, id: "r".into(), ..Default::default() };
        response.outputs.push(Tensor::new("o1", DataType::Fp32, vec![1], 1f32.to_le_bytes().to_vec()));
        response.outputs.push(Tensor::new("o2", DataType::Bytes, vec![0], Vec::new()));
        response.parameters.insert("p".into(), ParamValue::Int(1));
        let wire = to_wire(response);
        assert_eq!(
            (wire.model_name.as_str(), wire.model_version.as_str(), wire.id.as_str()),
            ("m", "3", "r")
        );
        let outs: Vec<_> =
            wire.outputs.iter().map(|o| (o.name.as_str(), o.datatype.as_str(), o.shape.clone())).collect();
        assert_eq!(outs, [("o1", "FP32", vec![1]), ("o2", "BYTES", vec![0])]);
        assert_eq!(wire.raw_output_contents, [1f32.to_le_bytes().to_vec(), vec![]]);
        assert_eq!(wire.parameters["p"], param(ParameterChoice::Int64Param(1)));
    }
}
