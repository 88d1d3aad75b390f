//! `/v2/systemsharedmemory/...` and `/v2/cudasharedmemory/...`: register, unregister and status,
//! for one region (`/region/{name}/...`) or all, with Triton's bodies and texts.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use nereid_core::server::InferenceServer;
use nereid_core::shared_memory_manager::MemoryKind;
use nereid_core::{Error, Result};
use serde_json::{json, Value};

use crate::routes::{error_response, parse_body, reply, AppState};
use crate::triton_json::{member, string, unable, unsigned};

type Region = Option<Path<String>>;

fn region_name(region: Region) -> String {
    region.map(|Path(name)| name).unwrap_or_default()
}

fn kind_name(kind: MemoryKind) -> &'static str {
    match kind {
        MemoryKind::System => "system",
        MemoryKind::Cuda => "cuda",
    }
}

fn done(result: Result<()>) -> Response {
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => error_response(&e),
    }
}

pub async fn status(kind: MemoryKind, State(s): State<AppState>, region: Region) -> Response {
    let name = region_name(region);
    let shm = s.shared_memory();
    reply(match kind {
        MemoryKind::System => shm.system_status(&name).map(|all| {
            let rows = all.into_iter().map(
                |r| json!({ "name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size }),
            );
            Value::Array(rows.collect())
        }),
        MemoryKind::Cuda => shm.cuda_status(&name).map(|all| {
            let rows = all
                .into_iter()
                .map(|r| json!({ "name": r.name, "device_id": r.device_id, "byte_size": r.byte_size }));
            Value::Array(rows.collect())
        }),
    })
}

pub async fn register(kind: MemoryKind, State(s): State<AppState>, region: Region, body: Bytes) -> Response {
    done(register_region(kind, &s, &region_name(region), &body))
}

fn register_region(kind: MemoryKind, s: &InferenceServer, name: &str, body: &Bytes) -> Result<()> {
    let shm = s.shared_memory();
    shm.check_allowed()?;
    if name.is_empty() {
        return Err(Error::invalid_arg(format!(
            "'region name' is necessary to register {} shared memory region",
            kind_name(kind)
        )));
    }
    let body = Value::Object(parse_body(body)?);
    let field = |key: &str| {
        body.get(key)
            .ok_or_else(|| Error::invalid_arg(format!("Shared memory register request has no '{key}' field")))
    };
    match kind {
        MemoryKind::System => {
            let key = string(field("key")?).map_err(Error::internal)?;
            let offset = body.get("offset").map(unsigned).transpose().map_err(Error::internal)?;
            let byte_size = unsigned(field("byte_size")?).map_err(Error::internal)?;
            shm.register_system(name, key, offset.unwrap_or(0), byte_size)
        }
        MemoryKind::Cuda => {
            let handle = member(field("raw_handle")?, "b64").and_then(string).map_err(Error::internal)?;
            let byte_size = member(&body, "byte_size").and_then(unsigned).map_err(Error::internal)?;
            let device_id = member(&body, "device_id").and_then(unsigned).map_err(Error::internal)?;
            let handle = decode_handle(handle);
            shm.register_cuda(name, &handle, i64::try_from(device_id).unwrap_or(i64::MAX), byte_size)
        }
    }
}

/// A `raw_handle`'s bytes. Triton's C++ client breaks its base64 into lines and Triton's decoder
/// skips what is not base64; text that still does not decode gives no bytes, which the manager
/// refuses like a handle of the wrong size.
fn decode_handle(text: &str) -> Vec<u8> {
    let text: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default()
}

pub async fn unregister(kind: MemoryKind, State(s): State<AppState>, region: Region) -> Response {
    done(s.shared_memory().unregister(kind, &region_name(region)))
}

/// Triton's `CheckSharedMemoryData`: the region, offset and byte size a tensor's parameters
/// name, if they name a region.
pub fn region_slice(parameters: Option<&Value>) -> Result<Option<(&str, u64, u64)>> {
    let Some(params) = parameters.and_then(Value::as_object) else { return Ok(None) };
    let Some(region) = params.get("shared_memory_region") else { return Ok(None) };
    let region = string(region).map_err(unable("shared_memory_region"))?;
    let number = |key: &str| params.get(key).map(unsigned).transpose().map_err(unable(key));
    let offset = number("shared_memory_offset")?.unwrap_or(0);
    Ok(Some((region, offset, number("shared_memory_byte_size")?.unwrap_or(0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_decode_across_lines_and_junk_decodes_to_nothing() {
        let lines = "QUFB".repeat(18) + "\n" + &"QUFB".repeat(3) + "QQ==\n";
        assert_eq!(decode_handle(&lines), vec![b'A'; 64]);
        assert!(decode_handle("not base64!").is_empty());
    }

    #[test]
    fn tensor_parameters_name_a_region() {
        let params = json!({"shared_memory_region": "r", "shared_memory_byte_size": 8});
        assert_eq!(region_slice(Some(&params)).unwrap(), Some(("r", 0, 8)));
        assert_eq!(region_slice(Some(&json!({"binary_data_size": 8}))).unwrap(), None);
        let negative = json!({"shared_memory_region": "r", "shared_memory_offset": -1});
        assert_eq!(
            region_slice(Some(&negative)).unwrap_err().message,
            "Unable to parse 'shared_memory_offset': attempt to access JSON non-unsigned-integer as unsigned-integer"
        );
    }
}
