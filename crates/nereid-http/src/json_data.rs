//! Tensor data as JSON: the `data` arrays of KServe v2 requests and responses.

use half::{bf16, f16};
use nereid_core::tensor::{bytes_elements, serialize_bytes, DataType};
use nereid_core::{Error, Result};
use serde_json::Value;

/// Flattens (possibly nested) `data` into raw little-endian bytes of `datatype`.
pub fn to_bytes(name: &str, datatype: DataType, data: &Value) -> Result<Vec<u8>> {
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let bad = |v: &Value| {
        Error::invalid_arg(format!(
            "unable to parse '{v}' as {} for input '{name}'",
            datatype.as_str()
        ))
    };
    if datatype == DataType::Bytes {
        let mut items = Vec::with_capacity(flat.len());
        for v in &flat {
            items.push(v.as_str().ok_or_else(|| bad(v))?.as_bytes());
        }
        return Ok(serialize_bytes(items));
    }
    let size = datatype.byte_size().expect("fixed-size type");
    let mut out = Vec::with_capacity(flat.len() * size);
    for v in &flat {
        macro_rules! int {
            ($ty:ty) => {{
                let n = if let Some(i) = v.as_i64() { <$ty>::try_from(i).ok() } else { v.as_u64().and_then(|u| <$ty>::try_from(u).ok()) };
                out.extend_from_slice(&n.ok_or_else(|| bad(v))?.to_le_bytes());
            }};
        }
        match datatype {
            DataType::Bool => out.push(v.as_bool().ok_or_else(|| bad(v))? as u8),
            DataType::Int8 => int!(i8),
            DataType::Int16 => int!(i16),
            DataType::Int32 => int!(i32),
            DataType::Int64 => int!(i64),
            DataType::Uint8 => int!(u8),
            DataType::Uint16 => int!(u16),
            DataType::Uint32 => int!(u32),
            DataType::Uint64 => int!(u64),
            DataType::Fp16 => out.extend_from_slice(&f16::from_f64(v.as_f64().ok_or_else(|| bad(v))?).to_le_bytes()),
            DataType::Bf16 => out.extend_from_slice(&bf16::from_f64(v.as_f64().ok_or_else(|| bad(v))?).to_le_bytes()),
            DataType::Fp32 => out.extend_from_slice(&(v.as_f64().ok_or_else(|| bad(v))? as f32).to_le_bytes()),
            DataType::Fp64 => out.extend_from_slice(&v.as_f64().ok_or_else(|| bad(v))?.to_le_bytes()),
            DataType::Bytes => unreachable!("handled above"),
        }
    }
    Ok(out)
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// Raw tensor bytes as a flat JSON array.
pub fn to_json(datatype: DataType, data: &[u8]) -> Value {
    macro_rules! nums {
        ($ty:ty, $map:expr) => {
            data.chunks_exact(std::mem::size_of::<$ty>())
                .map(|c| $map(<$ty>::from_le_bytes(c.try_into().expect("exact chunk"))))
                .collect()
        };
    }
    Value::Array(match datatype {
        DataType::Bool => data.iter().map(|&b| Value::Bool(b != 0)).collect(),
        DataType::Int8 => nums!(i8, Value::from),
        DataType::Int16 => nums!(i16, Value::from),
        DataType::Int32 => nums!(i32, Value::from),
        DataType::Int64 => nums!(i64, Value::from),
        DataType::Uint8 => nums!(u8, Value::from),
        DataType::Uint16 => nums!(u16, Value::from),
        DataType::Uint32 => nums!(u32, Value::from),
        DataType::Uint64 => nums!(u64, Value::from),
        DataType::Fp16 => nums!(f16, |v: f16| Value::from(f64::from(v.to_f32()))),
        DataType::Bf16 => nums!(bf16, |v: bf16| Value::from(f64::from(v.to_f32()))),
        DataType::Fp32 => nums!(f32, |v: f32| float(v)),
        DataType::Fp64 => nums!(f64, Value::from),
        DataType::Bytes => bytes_elements(data)
            .map_while(|e| e.ok())
            .map(|e| Value::String(String::from_utf8_lossy(e).into_owned()))
            .collect(),
    })
}

/// An f32 as the shortest decimal that reads back to the same f32 (not its f64 expansion).
fn float(v: f32) -> Value {
    if v.is_finite() {
        serde_json::Number::from_f64(v.to_string().parse::<f64>().unwrap_or(f64::from(v)))
            .map(Value::Number)
            .unwrap_or(Value::Null)
    } else {
        Value::Null
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_type_round_trips() {
        let cases = [
            (DataType::Bool, json!([true, false])),
            (DataType::Int8, json!([-128, 127])),
            (DataType::Int16, json!([-3, 300])),
            (DataType::Int32, json!([1, -2, 3])),
            (DataType::Int64, json!([i64::MIN, i64::MAX])),
            (DataType::Uint8, json!([0, 255])),
            (DataType::Uint16, json!([65535])),
            (DataType::Uint32, json!([4000000000u32])),
            (DataType::Uint64, json!([u64::MAX])),
            (DataType::Fp16, json!([1.5, -2.0])),
            (DataType::Bf16, json!([1.5, -2.0])),
            (DataType::Fp32, json!([1.1, -0.5])),
            (DataType::Fp64, json!([1.1, 1e300])),
            (DataType::Bytes, json!(["abc", ""])),
        ];
        for (dt, v) in cases {
            let bytes = to_bytes("x", dt, &v).unwrap();
            assert_eq!(to_json(dt, &bytes), v, "{}", dt.as_str());
        }
    }

    #[test]
    fn nested_data_is_row_major_and_bad_values_fail() {
        let b = to_bytes("x", DataType::Int32, &json!([[1, 2], [3, 4]])).unwrap();
        assert_eq!(to_json(DataType::Int32, &b), json!([1, 2, 3, 4]));
        assert!(to_bytes("x", DataType::Int8, &json!([300])).is_err());
        assert!(to_bytes("x", DataType::Int32, &json!(["a"])).is_err());
        assert!(to_bytes("x", DataType::Bytes, &json!([1])).is_err());
        assert!(to_bytes("x", DataType::Uint8, &json!([-1])).is_err());
    }
}
