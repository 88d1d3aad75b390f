//! What a stub asks of the server on its side socket: decoupled responses, logging, custom
//! metrics, shared memory announcements, and (in [`crate::bls`]) inference and model control.
//! This runs on the stub's reader thread, so whatever may wait goes to a thread of its own.

use std::sync::Arc;

use nereid_core::{Error, Result};
use serde_json::{json, Value};

use crate::custom_metrics::{custom_metrics, Kind};
use crate::model::ModelContext;
use crate::stub::Stub;
use crate::wire;

pub fn serve(context: &Arc<ModelContext>, stub: &Arc<Stub>, message: Value) {
    if let Some(free) = message.get("free") {
        stub.transfer.returned(free);
    }
    let reply = |result: Result<Value>| {
        if let Some(id) = message.get("id") {
            stub.side.reply(id, result.unwrap_or_else(|e| json!({"error": e.message})));
        }
    };
    match message["op"].as_str().unwrap_or_default() {
        "free" => {}
        "log" => log(&message),
        "send" => send(stub, &message),
        "map" => reply(stub.transfer.map_peer(&message).map(|()| json!({}))),
        "is_cancelled" => {
            let key = message["key"].as_u64().unwrap_or(0);
            let cancelled = stub.requests.lock().get(&key).is_none_or(|r| r.sender.is_cancelled());
            reply(Ok(json!({"cancelled": cancelled})));
        }
        "infer" => crate::bls::infer(context, stub, message),
        "cancel" => crate::bls::cancel(stub, &message),
        "load_model" | "unload_model" | "is_model_ready" => crate::bls::model_control(context, stub, message),
        op if op.starts_with("metric") => reply(metric(stub, op, &message)),
        op => log::error!("unknown message '{op}' from the stub of '{}'", stub.instance),
    }
}

/// `pb_utils.Logger`: into the server's log at the matching level, with the model's file and line.
fn log(message: &Value) {
    let level = match message["level"].as_str() {
        Some("E") => log::Level::Error,
        Some("W") => log::Level::Warn,
        Some("V") => log::Level::Debug,
        _ => log::Level::Info,
    };
    let text = message["message"].as_str().unwrap_or_default();
    log::logger().log(
        &log::Record::builder()
            .level(level)
            .file(message["file"].as_str())
            .line(message["line"].as_u64().map(|l| l as u32))
            .args(format_args!("{text}"))
            .build(),
    );
}

/// A decoupled response; the final one releases the request.
fn send(stub: &Stub, message: &Value) {
    let key = message["key"].as_u64().unwrap_or(0);
    let is_final = message["final"].as_bool().unwrap_or(false);
    let Some((sender, inputs)) = stub.requests.lock().get(&key).map(|r| (r.sender.clone(), r.inputs.clone())) else {
        return;
    };
    let sent = match &message["response"] {
        Value::Null => sender.finish(),
        response => match wire::response(&stub.transfer, response, &inputs) {
            Ok((tensors, parameters)) => sender.send(Ok(tensors), parameters, is_final),
            Err(e) => sender.send(Err(e), Default::default(), is_final),
        },
    };
    if let Err(e) = sent {
        log::error!("a response of '{}' was dropped: {e}", stub.instance);
    }
    if is_final {
        stub.requests.lock().remove(&key);
    }
}

fn metric(stub: &Stub, op: &str, message: &Value) -> Result<Value> {
    let metrics = custom_metrics();
    let mut mine = stub.metrics.lock();
    let id = |key: &str| message[key].as_u64().ok_or_else(|| Error::invalid_arg(format!("missing '{key}'")));
    match op {
        "metric_family" => {
            let kind = Kind::parse(message["kind"].as_str().unwrap_or_default())?;
            let name = message["name"].as_str().unwrap_or_default();
            let family = metrics.family(name, message["description"].as_str().unwrap_or_default(), kind)?;
            Ok(json!({"family": mine.add_family(family)}))
        }
        "metric" => {
            let family = mine.family(id("family")?)?;
            let labels = message["labels"].as_object().into_iter().flatten();
            let labels = labels.map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)));
            let buckets = message["buckets"].as_array().map(|b| b.iter().filter_map(Value::as_f64).collect());
            let labels = metrics.metric(&family, labels.collect(), buckets)?;
            Ok(json!({"metric": mine.add_metric(family, labels)}))
        }
        "metric_update" => {
            let (family, labels) = mine.metric(id("metric")?)?;
            let value = message["value"].as_f64().ok_or_else(|| Error::invalid_arg("a metric value must be a number"))?;
            metrics.update(&family, &labels, message["action"].as_str().unwrap_or_default(), value)?;
            Ok(json!({}))
        }
        "metric_value" => {
            let (family, labels) = mine.metric(id("metric")?)?;
            Ok(json!({"value": metrics.value(&family, &labels)?}))
        }
        "metric_delete" => {
            mine.remove_metric(id("metric")?);
            Ok(json!({}))
        }
        "metric_family_delete" => {
            mine.remove_family(id("family")?);
            Ok(json!({}))
        }
        _ => Err(Error::invalid_arg(format!("unknown metric request '{op}'"))),
    }
}
