//! JSON access with the errors Triton's JSON reader gives (they reach clients verbatim).
//!
//! Triton reports these as internal errors, prefixed with what was being parsed
//! ("Unable to parse 'shape': attempt to access JSON non-unsigned-integer as unsigned-integer").

use nereid_core::Error;
use serde_json::Value;

pub type JsonResult<T> = Result<T, String>;

pub fn member<'a>(object: &'a Value, name: &str) -> JsonResult<&'a Value> {
    object.get(name).ok_or_else(|| format!("attempt to access non-existing object member '{name}'"))
}

pub fn array(v: &Value) -> JsonResult<&Vec<Value>> {
    v.as_array().ok_or_else(|| "attempt to access JSON non-array as array".to_string())
}

pub fn string(v: &Value) -> JsonResult<&str> {
    v.as_str().ok_or_else(|| "attempt to access JSON non-string as string".to_string())
}

pub fn boolean(v: &Value) -> JsonResult<bool> {
    v.as_bool().ok_or_else(|| "attempt to access JSON non-boolean as boolean".to_string())
}

pub fn unsigned(v: &Value) -> JsonResult<u64> {
    v.as_u64().ok_or_else(|| "attempt to access JSON non-unsigned-integer as unsigned-integer".to_string())
}

pub fn signed(v: &Value) -> JsonResult<i64> {
    v.as_i64().ok_or_else(|| "attempt to access JSON non-signed-integer as signed-integer".to_string())
}

pub fn double(v: &Value) -> JsonResult<f64> {
    v.as_f64().ok_or_else(|| "attempt to access JSON non-number as double".to_string())
}

/// Triton's `RETURN_MSG_IF_ERR(x, "Unable to parse '<what>'")`.
pub fn unable(what: &str) -> impl Fn(String) -> Error + '_ {
    move |e| Error::internal(format!("Unable to parse '{what}': {e}"))
}

/// Parses a JSON document with Triton's message: "failed to parse the request JSON buffer: ... at <offset>".
pub fn parse(text: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(text).map_err(|e| {
        let offset: usize =
            text.split(|&b| b == b'\n').take(e.line().saturating_sub(1)).map(|l| l.len() + 1).sum::<usize>()
                + e.column();
        let message = e.to_string();
        let reason = message.split(" at line ").next().unwrap_or(&message);
        Error::internal(format!("failed to parse the request JSON buffer: {reason} at {offset}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_read_like_tritons() {
        let v = json!({"a": [1], "n": -1});
        assert_eq!(member(&v, "b").unwrap_err(), "attempt to access non-existing object member 'b'");
        assert_eq!(
            unsigned(&v["n"]).unwrap_err(),
            "attempt to access JSON non-unsigned-integer as unsigned-integer"
        );
        assert!(array(&v["a"]).is_ok());
        let e = unable("shape")(unsigned(&v["n"]).unwrap_err());
        assert_eq!(
            e.message,
            "Unable to parse 'shape': attempt to access JSON non-unsigned-integer as unsigned-integer"
        );
        assert_eq!(e.code, nereid_core::Code::Internal);
    }

    #[test]
    fn parse_errors_give_an_offset() {
        let e = parse(b"{\"inputs\": [").unwrap_err();
        assert!(e.message.starts_with("failed to parse the request JSON buffer: "), "{}", e.message);
        assert!(e.message.ends_with(" at 12"), "{}", e.message);
    }
}
