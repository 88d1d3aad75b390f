//! The HTTP/REST endpoints: each decodes its request, calls the core, encodes the answer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use nereid_core::infer_request::{parse_version, InferRequest};
use nereid_core::logging::LogFormat;
use nereid_core::model_repository_manager::LoadOverride;
use nereid_core::server::InferenceServer;
use nereid_core::shared_memory_manager::RequestRegions;
use nereid_core::stats::{Duration64, StatsSnapshot};
use nereid_core::{model_config, Code, Error, Result};
use serde_json::{json, Map, Value};

use crate::triton_json::{boolean, string, unsigned};
use crate::{compression, infer_codec};

pub type AppState = Arc<InferenceServer>;

const HEADER_LENGTH: &str = "inference-header-content-length";

/// Triton's status for each error code, with `{"error": "..."}`.
pub fn error_response(e: &Error) -> Response {
    let status = match e.code {
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unsupported => StatusCode::NOT_IMPLEMENTED,
        Code::Unknown | Code::InvalidArg | Code::AlreadyExists | Code::Cancelled => StatusCode::BAD_REQUEST,
    };
    (status, json_body(&json!({ "error": e.message }))).into_response()
}

fn json_body(v: &Value) -> ([(header::HeaderName, HeaderValue); 1], Vec<u8>) {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        serde_json::to_vec(v).expect("JSON of plain values"),
    )
}

pub(crate) fn reply(result: Result<Value>) -> Response {
    match result {
        Ok(v) => json_body(&v).into_response(),
        Err(e) => error_response(&e),
    }
}

fn ok_or_400(ok: bool) -> Response {
    if ok { StatusCode::OK } else { StatusCode::BAD_REQUEST }.into_response()
}

/// `{model}` and optional `{version}` from the path; as in Triton's routes, a version that is
/// not all digits matches no route.
fn model_path(p: &HashMap<String, String>) -> Result<(String, Option<i64>)> {
    let model = p.get("model").cloned().unwrap_or_default();
    let version = match p.get("version") {
        Some(v) if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) => return Err(route_not_found()),
        Some(v) => parse_version(v)?,
        None => None,
    };
    Ok((model, version))
}

fn route_not_found() -> Error {
    Error::not_found("Not Found")
}

pub async fn not_found() -> Response {
    error_response(&route_not_found())
}

pub async fn method_not_allowed() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, json_body(&json!({ "error": "Method Not Allowed" }))).into_response()
}

/// Undoes `Content-Encoding` before any handler reads the body.
pub async fn decompress_request(request: Request, next: Next) -> Response {
    let encoding = request.headers().get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?"));
    let encoding = match compression::request_encoding(encoding) {
        Ok(None) => return next.run(request).await,
        Ok(Some(e)) => e,
        Err(()) => {
            let mut r = error_response(&Error::unsupported("Unsupported compression type"));
            r.headers_mut().insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, deflate"));
            return r;
        }
    };
    let (mut parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, crate::MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(&Error::invalid_arg(format!("failed to read the request body: {e}")))
        }
    };
    match compression::decompress(encoding, &body, crate::MAX_BODY_BYTES) {
        Ok(plain) => {
            parts.headers.remove(header::CONTENT_ENCODING);
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(plain.len()));
            next.run(Request::from_parts(parts, Body::from(plain))).await
        }
        Err(e) => error_response(&e),
    }
}

pub async fn server_metadata(State(s): State<AppState>) -> Response {
    reply(Ok(json!({
        "name": s.id(),
        "version": s.version(),
        "extensions": s.extensions(),
    })))
}

pub async fn live(State(s): State<AppState>) -> Response {
    ok_or_400(s.is_live())
}

pub async fn ready(State(s): State<AppState>) -> Response {
    ok_or_400(s.is_ready())
}

pub async fn model_ready(State(s): State<AppState>, Path(p): Path<HashMap<String, String>>) -> Response {
    match model_path(&p) {
        Ok((m, v)) if s.model_ready(&m, v) => StatusCode::OK.into_response(),
        Ok(_) => error_response(&Error::invalid_arg("Model version not ready")),
        Err(e) => error_response(&e),
    }
}

pub async fn model_metadata(State(s): State<AppState>, Path(p): Path<HashMap<String, String>>) -> Response {
    reply(model_path(&p).and_then(|(m, v)| s.model_metadata(&m, v)).map(|md| {
        let tensors = |ts: Vec<nereid_core::server::TensorMetadata>| -> Vec<Value> {
            ts.into_iter()
                .map(|t| json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape }))
                .collect()
        };
        json!({
            "name": md.name,
            "versions": md.versions,
            "platform": md.platform,
            "inputs": tensors(md.inputs),
            "outputs": tensors(md.outputs),
        })
    }))
}

pub async fn model_config(State(s): State<AppState>, Path(p): Path<HashMap<String, String>>) -> Response {
    reply(model_path(&p).and_then(|(m, v)| s.model_config(&m, v)).map(|c| model_config::to_json(&c)))
}

fn duration(d: Duration64) -> Value {
    json!({ "count": d.count, "ns": d.ns })
}

fn stats_json(name: &str, version: i64, s: &StatsSnapshot) -> Value {
    let zero = duration(Duration64::default());
    json!({
        "name": name,
        "version": version.to_string(),
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": duration(s.success),
            "fail": duration(s.fail),
            "queue": duration(s.queue),
            "compute_input": duration(s.compute_input),
            "compute_infer": duration(s.compute_infer),
            "compute_output": duration(s.compute_output),
            "cache_hit": zero,
            "cache_miss": zero,
        },
        "response_stats": {},
        "batch_stats": s.batch_stats.iter().map(|b| json!({
            "batch_size": b.batch_size,
            "compute_input": duration(b.compute_input),
            "compute_infer": duration(b.compute_infer),
            "compute_output": duration(b.compute_output),
        })).collect::<Vec<_>>(),
        "memory_usage": [],
    })
}

pub async fn model_stats(State(s): State<AppState>, p: Option<Path<HashMap<String, String>>>) -> Response {
    let result = match p {
        Some(Path(p)) if p.contains_key("model") => {
            model_path(&p).and_then(|(m, v)| s.statistics(Some(&m), v))
        }
        _ => s.statistics(None, None),
    };
    reply(result.map(|all| {
        json!({ "model_stats": all.iter().map(|m| stats_json(&m.name, m.version, &m.stats)).collect::<Vec<_>>() })
    }))
}

pub(crate) fn parse_body(body: &Bytes) -> Result<Map<String, Value>> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::invalid_arg("failed to parse the request JSON buffer: expected an object")),
        Err(e) => Err(Error::invalid_arg(format!("failed to parse the request JSON buffer: {e}"))),
    }
}

pub async fn repository_index(State(s): State<AppState>, body: Bytes) -> Response {
    let ready = match parse_body(&body) {
        Ok(m) => match m.get("ready") {
            None => false,
            Some(v) => match v.as_bool() {
                Some(b) => b,
                None => return error_response(&Error::invalid_arg("Unable to parse 'ready'")),
            },
        },
        Err(e) => return error_response(&e),
    };
    let entries: Vec<Value> = s
        .repository_index(ready)
        .into_iter()
        .map(|e| {
            let mut o = Map::new();
            o.insert("name".into(), Value::String(e.name));
            if let Some(v) = e.version {
                o.insert("version".into(), Value::String(v.to_string()));
            }
            if let Some(state) = e.state {
                o.insert("state".into(), Value::String(state.as_str().into()));
            }
            if !e.reason.is_empty() {
                o.insert("reason".into(), Value::String(e.reason));
            }
            Value::Object(o)
        })
        .collect();
    reply(Ok(Value::Array(entries)))
}

fn load_overrides(body: &Bytes) -> Result<Option<LoadOverride>> {
    let root = parse_body(body)?;
    let Some(params) = root.get("parameters") else { return Ok(None) };
    let params = params.as_object().ok_or_else(|| Error::invalid_arg("Unable to parse 'parameters'"))?;
    let mut o = LoadOverride::default();
    for (key, v) in params {
        if key == "config" {
            o.config_json =
                Some(v.as_str().ok_or_else(|| Error::invalid_arg("Unable to parse 'config'"))?.to_string());
        } else if let Some(path) = key.strip_prefix("file:") {
            let text = v.as_str().ok_or_else(|| Error::invalid_arg(format!("Unable to parse '{key}'")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| Error::invalid_arg(format!("Unable to decode '{key}': {e}")))?;
            o.files.insert(path.to_string(), bytes);
        }
    }
    Ok(Some(o))
}

pub async fn repository_load(State(s): State<AppState>, Path(model): Path<String>, body: Bytes) -> Response {
    let overrides = match load_overrides(&body) {
        Ok(o) => o,
        Err(e) => return error_response(&e),
    };
    let result = tokio::task::spawn_blocking(move || s.load_model(&model, overrides)).await;
    match result.unwrap_or_else(|e| Err(Error::internal(format!("load task failed: {e}")))) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => error_response(&e),
    }
}

pub async fn repository_unload(
    State(s): State<AppState>,
    Path(model): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(e) = parse_body(&body) {
        return error_response(&e);
    }
    let result = tokio::task::spawn_blocking(move || s.unload_model(&model)).await;
    match result.unwrap_or_else(|e| Err(Error::internal(format!("unload task failed: {e}")))) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => error_response(&e),
    }
}

fn log_settings_json(s: &InferenceServer) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let l = s.log_settings();
    json!({
        "log_file": l.file_name(),
        "log_info": l.info.load(Relaxed),
        "log_warning": l.warning.load(Relaxed),
        "log_error": l.error.load(Relaxed),
        "log_verbose_level": l.verbose_level.load(Relaxed),
        "log_format": l.format().as_str(),
    })
}

pub async fn get_logging(State(s): State<AppState>) -> Response {
    reply(Ok(log_settings_json(&s)))
}

pub async fn post_logging(State(s): State<AppState>, body: Bytes) -> Response {
    reply(update_logging(&s, &body).map(|()| log_settings_json(&s)))
}

fn update_logging(s: &InferenceServer, body: &Bytes) -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let l = s.log_settings();
    let m = parse_body(body)?;
    let setting = |key: &str| m.get(key).filter(|v| !v.is_null());
    if setting("log_file").is_some() {
        return Err(Error::unsupported("log file location can not be updated through network protocol"));
    }
    let flag = |key: &str| setting(key).map(|v| boolean(v).map_err(Error::internal)).transpose();
    if let Some(b) = flag("log_info")? {
        l.info.store(b, Relaxed);
    }
    if let Some(b) = flag("log_warning")? {
        l.warning.store(b, Relaxed);
    }
    if let Some(b) = flag("log_error")? {
        l.error.store(b, Relaxed);
    }
    if let Some(v) = setting("log_verbose_level") {
        let level = unsigned(v).map_err(Error::internal)?;
        l.verbose_level.store(u32::try_from(level).unwrap_or(u32::MAX), Relaxed);
    }
    if let Some(v) = setting("log_format") {
        let text = string(v).map_err(Error::internal)?;
        let format = LogFormat::parse(text)
            .ok_or_else(|| Error::unavailable(format!("invalid argument for --log_format, got: {text}")))?;
        l.set_format(format);
    }
    Ok(())
}

pub async fn unsupported(uri: axum::http::Uri) -> Response {
    error_response(&Error::unsupported(format!("{} is not supported yet", uri.path())))
}

pub async fn infer(
    State(s): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .and_then(compression::response_encoding);
    match infer_inner(&s, &p, &headers, body).await {
        Ok((json, binary)) => infer_response(json, binary, accept),
        Err(e) => error_response(&e),
    }
}

/// Triton's `Inference-Header-Content-Length` checks, with its messages.
fn header_length(headers: &HeaderMap, body_len: usize) -> Result<Option<usize>> {
    let Some(v) = headers.get(HEADER_LENGTH) else { return Ok(None) };
    let text = v.to_str().unwrap_or_default();
    let n: i64 = text.parse().map_err(|_| {
        Error::invalid_arg(format!("Unable to parse Inference-Header-Content-Length, got: {text}"))
    })?;
    let n = i32::try_from(n).map_err(|_| {
        Error::invalid_arg(format!(
            "Unable to parse Inference-Header-Content-Length, value is out of range [ {}, {} ], got: {text}",
            i32::MIN,
            i32::MAX
        ))
    })?;
    if n < 0 || n as usize > body_len {
        return Err(Error::invalid_arg(format!(
            "inference header size should be in range (0, {body_len}), got: {text}"
        )));
    }
    Ok(Some(n as usize))
}

/// Decodes, runs and encodes one inference; returns the JSON header and the binary outputs.
async fn infer_inner(
    s: &InferenceServer,
    p: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(Vec<u8>, Vec<Bytes>)> {
    let (name, version) = model_path(p)?;
    let model = s.model(&name, version)?;
    if model.is_decoupled() {
        return Err(Error::unsupported("HTTP end point doesn't support models with decoupled transaction policy"));
    }
    let header_length = header_length(headers, body.len())?;
    let is_raw = header_length.is_none()
        && headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
    let (request, encoding, regions) = if is_raw {
        let mut request = InferRequest::new(name.as_str(), version);
        match model.config.input.as_slice() {
            [input] => infer_codec::decode_raw(&mut request, input, model.config.max_batch_size > 0, body)?,
            inputs => {
                return Err(Error::invalid_arg(format!(
                    "{}Raw request must only have 1 input (found 1) to be deduced but got {} inputs in '{name}' model configuration",
                    nereid_core::infer_request::log_prefix(""),
                    inputs.len()
                )))
            }
        }
        let encoding = infer_codec::OutputEncoding { default_binary: true, binary: Vec::new() };
        (request, encoding, RequestRegions::default())
    } else {
        infer_codec::decode(&name, version, body, header_length, s.shared_memory())?
    };
    let mut response = model.infer(request).await?;
    regions.finish(&mut response)?;
    Ok(infer_codec::encode(response, &encoding, &regions))
}

fn infer_response(json: Vec<u8>, binary: Vec<Bytes>, accept: Option<compression::Encoding>) -> Response {
    let json_len = json.len();
    let (content_type, body) = if binary.is_empty() {
        ("application/json", json)
    } else {
        let mut body = Vec::with_capacity(json_len + binary.iter().map(|b| b.len()).sum::<usize>());
        body.extend_from_slice(&json);
        for b in &binary {
            body.extend_from_slice(b);
        }
        ("application/octet-stream", body)
    };
    let mut builder = Response::builder().header(header::CONTENT_TYPE, content_type);
    if !binary.is_empty() {
        builder = builder.header(HEADER_LENGTH, json_len);
    }
    let body = match accept {
        Some(e) => {
            builder = builder.header(header::CONTENT_ENCODING, e.as_str());
            compression::compress(e, &body)
        }
        None => body,
    };
    builder.body(Body::from(body)).expect("valid response")
}
