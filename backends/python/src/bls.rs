//! Business Logic Scripting: a Python model's own requests to the server (`exec`, `async_exec`,
//! decoupled iterators) and its model control calls (`load_model`, `unload_model`,
//! `is_model_ready`). Each runs on a thread of its own: it may wait for other models, even for
//! other stubs of the same model.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nereid_core::decoupled::StreamItem;
use nereid_core::model_repository_manager::LoadOverride;
use nereid_core::server::InferenceServer;
use nereid_core::{Error, Result};
use serde_json::{json, Value};

use crate::model::ModelContext;
use crate::stub::Stub;
use crate::wire;

fn server(context: &ModelContext) -> Result<Arc<InferenceServer>> {
    context.server.get().ok_or_else(|| Error::unavailable("the server is not running (yet)"))
}

/// Runs a BLS request; its responses go back as replies to the stub's request, the last one
/// marked final.
pub fn infer(context: &Arc<ModelContext>, stub: &Arc<Stub>, message: Value) {
    let id = message["id"].as_u64().unwrap_or(0);
    let cancel = Arc::new(AtomicBool::new(false));
    stub.bls.lock().insert(id, cancel.clone());
    let (context, stub) = (context.clone(), stub.clone());
    let run = move || {
        respond(&context, &stub, &message, &cancel);
        stub.bls.lock().remove(&id);
    };
    if let Err(e) = std::thread::Builder::new().name("python-bls".into()).spawn(run) {
        log::error!("failed to start a BLS request: {e}");
    }
}

fn respond(context: &ModelContext, stub: &Stub, message: &Value, cancel: &AtomicBool) {
    let reply = |item: Value, is_final: bool| {
        stub.side.reply(&message["id"], json!({"response": item, "final": is_final}));
    };
    let wants_stream = message["decoupled"].as_bool().unwrap_or(false);
    let submitted = wire::bls_request(&stub.transfer, &message["request"]).and_then(|request| {
        let model = server(context)?.model(&request.model_name, request.model_version)?;
        if model.is_decoupled() && !wants_stream {
            return Err(Error::invalid_arg(format!(
                "Model {} is using the decoupled. The current BLS request call doesn't support models using the decoupled transaction policy. Please use 'decoupled=True' argument to the 'exec' or 'async_exec' calls for decoupled models.'",
                model.name
            )));
        }
        model.submit_stream(request)
    });
    let mut stream = match submitted {
        Ok(stream) => stream,
        Err(e) => return reply(json!({"error": wire::error_to(&e)}), true),
    };
    while let Some(StreamItem { response, is_final }) = stream.blocking_next() {
        if cancel.load(Ordering::Acquire) {
            let cancelled = Error::new(nereid_core::Code::Cancelled, "the BLS request was cancelled");
            return reply(json!({"error": wire::error_to(&cancelled)}), true);
        }
        let encoded = match response {
            None => Value::Null,
            Some(Err(e)) => json!({"error": wire::error_to(&e)}),
            Some(Ok(response)) => match wire::bls_response(&stub.transfer, &response) {
                Ok((encoded, blocks)) => {
                    blocks.into_iter().for_each(|block| stub.transfer.lend(block));
                    encoded
                }
                Err(e) => json!({"error": wire::error_to(&e)}),
            },
        };
        reply(encoded, is_final);
    }
}

/// `ResponseIterator.cancel()`: the request's stream is dropped at its next response.
pub fn cancel(stub: &Stub, message: &Value) {
    if let Some(cancel) = message["request"].as_u64().and_then(|id| stub.bls.lock().remove(&id)) {
        cancel.store(true, Ordering::Release);
    }
}

/// `load_model`, `unload_model`, `is_model_ready`, answered from a thread of their own.
pub fn model_control(context: &Arc<ModelContext>, stub: &Arc<Stub>, message: Value) {
    let (context, stub) = (context.clone(), stub.clone());
    let run = move || {
        let name = message["name"].as_str().unwrap_or_default();
        let result = server(&context).and_then(|server| match message["op"].as_str() {
            Some("load_model") => {
                let config = message["config"].as_str().filter(|c| !c.is_empty()).map(str::to_string);
                let files: BTreeMap<String, Vec<u8>> = message["files"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(key, hex)| {
                        let path = key.strip_prefix("file:").unwrap_or(key).to_string();
                        Ok((path, from_hex(hex.as_str().unwrap_or_default())?))
                    })
                    .collect::<Result<_>>()?;
                let overrides = (config.is_some() || !files.is_empty())
                    .then_some(LoadOverride { config_json: config, files });
                server.load_model(name, overrides).map(|()| json!({}))
            }
            Some("unload_model") => server.unload_model(name).map(|()| json!({})),
            _ => {
                let version = message["version"].as_str().unwrap_or_default();
                let version = nereid_core::infer_request::parse_version(version)?;
                Ok(json!({"ready": server.model_ready(name, version)}))
            }
        });
        stub.side.reply(&message["id"], result.unwrap_or_else(|e| json!({"error": e.message})));
    };
    if let Err(e) = std::thread::Builder::new().name("python-model-control".into()).spawn(run) {
        log::error!("failed to start a model control request: {e}");
    }
}

fn from_hex(text: &str) -> Result<Vec<u8>> {
    let invalid = || Error::invalid_arg("malformed file content in load_model");
    if !text.len().is_multiple_of(2) {
        return Err(invalid());
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| invalid())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_contents_come_as_hex() {
        assert_eq!(from_hex("00ff10").unwrap(), vec![0, 255, 16]);
        assert!(from_hex("0").is_err());
        assert!(from_hex("zz").is_err());
    }
}
