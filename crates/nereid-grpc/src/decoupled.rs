//! ModelStreamInfer for decoupled models: a request's responses are written as the model sends
//! them, each marked with `triton_final_response`; the final flag alone becomes an empty
//! response only when the request asks with `triton_enable_empty_final_response`.

use std::collections::HashMap;
use std::future::Future;

use nereid_core::decoupled::StreamItem;
use nereid_core::infer_request::parse_version;
use nereid_core::server::InferenceServer;
use nereid_core::{Error, Result};
use nereid_proto::inference::infer_parameter::ParameterChoice;
use nereid_proto::inference::{InferParameter, ModelInferRequest, ModelInferResponse, ModelStreamInferResponse};
use tokio::sync::mpsc;
use tonic::Status;

const EMPTY_FINAL: &str = "triton_enable_empty_final_response";

pub type Responses = mpsc::Sender<Result<ModelStreamInferResponse, Status>>;

pub fn is_decoupled(server: &InferenceServer, request: &ModelInferRequest) -> bool {
    parse_version(&request.model_version)
        .ok()
        .and_then(|version| server.model(&request.model_name, version).ok())
        .is_some_and(|model| model.is_decoupled())
}

/// Submits the request now, in stream order; the returned future writes its responses to `out`.
pub fn answer(
    server: &InferenceServer,
    mut request: ModelInferRequest,
    out: Responses,
) -> impl Future<Output = ()> + Send + 'static {
    let known = ModelInferResponse {
        id: request.id.clone(),
        model_name: request.model_name.clone(),
        model_version: request.model_version.clone(),
        ..Default::default()
    };
    let submitted = empty_final_wanted(&mut request.parameters).and_then(|empty_final| {
        let (core, regions) = crate::infer::to_core(server.shared_memory(), request)?;
        Ok((server.submit_stream(core)?, regions, empty_final))
    });
    async move {
        let (mut stream, regions, empty_final) = match submitted {
            Ok(submitted) => submitted,
            Err(e) => {
                let _ = out.send(Ok(failed(&known, e, true))).await;
                return;
            }
        };
        while let Some(StreamItem { response, is_final }) = stream.next().await {
            let written = match response {
                Some(Ok(mut response)) => match regions.finish(&mut response) {
                    Ok(()) => {
                        let mut wire = crate::infer::to_wire(response);
                        mark_final(&mut wire, is_final);
                        ModelStreamInferResponse { error_message: String::new(), infer_response: Some(wire) }
                    }
                    Err(e) => failed(&known, e, is_final),
                },
                Some(Err(e)) => failed(&known, e, is_final),
                None if empty_final => {
                    let mut wire = known.clone();
                    mark_final(&mut wire, true);
                    ModelStreamInferResponse { error_message: String::new(), infer_response: Some(wire) }
                }
                None => continue,
            };
            // The client has gone: dropping the stream tells the model its request is cancelled.
            if out.send(Ok(written)).await.is_err() {
                return;
            }
        }
    }
}

/// Triton marks every response of a stream with whether it is the request's last.
pub fn mark_final(response: &mut ModelInferResponse, is_final: bool) {
    let flag = InferParameter { parameter_choice: Some(ParameterChoice::BoolParam(is_final)) };
    response.parameters.insert("triton_final_response".into(), flag);
}

fn failed(known: &ModelInferResponse, e: Error, is_final: bool) -> ModelStreamInferResponse {
    let mut wire = known.clone();
    mark_final(&mut wire, is_final);
    ModelStreamInferResponse { error_message: e.message, infer_response: Some(wire) }
}

/// Takes the request parameter out (it is the frontend's, not the model's).
fn empty_final_wanted(parameters: &mut HashMap<String, InferParameter>) -> Result<bool> {
    match parameters.remove(EMPTY_FINAL).map(|p| p.parameter_choice) {
        None => Ok(false),
        Some(Some(ParameterChoice::BoolParam(wanted))) => Ok(wanted),
        Some(_) => Err(Error::invalid_arg(format!(
            "invalid value type for '{EMPTY_FINAL}' parameter, expected bool_param."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_final_parameter_is_taken_out() {
        let bool_param = |b| InferParameter { parameter_choice: Some(ParameterChoice::BoolParam(b)) };
        let mut params = HashMap::from([(EMPTY_FINAL.to_string(), bool_param(true))]);
        assert!(empty_final_wanted(&mut params).unwrap());
        assert!(params.is_empty());
        assert!(!empty_final_wanted(&mut params).unwrap());
        let wrong = InferParameter { parameter_choice: Some(ParameterChoice::Int64Param(1)) };
        let mut params = HashMap::from([(EMPTY_FINAL.to_string(), wrong)]);
        assert_eq!(
            empty_final_wanted(&mut params).unwrap_err().message,
            "invalid value type for 'triton_enable_empty_final_response' parameter, expected bool_param."
        );
    }

    #[test]
    fn responses_are_marked() {
        let mut response = ModelInferResponse::default();
        mark_final(&mut response, false);
        assert_eq!(
            response.parameters["triton_final_response"].parameter_choice,
            Some(ParameterChoice::BoolParam(false))
        );
    }
}
