//! Tensor data as JSON: the `data` arrays of KServe v2 requests and responses.

use half::{bf16, f16};
use nereid_core::tensor::{bytes_elements, serialize_bytes, DataType};
use nereid_core::{Error, Result};
use serde_json::Value;

use crate::triton_json::{boolean, double, signed, string, unable, unsigned};

/// Reads (possibly nested) `data` as `count` elements of `datatype`, row-major, into raw
/// little-endian bytes. For BYTES the element count is checked later, against the shape.
pub fn to_bytes(name: &str, datatype: DataType, data: &Value, count: usize) -> Result<Vec<u8>> {
    if matches!(datatype, DataType::Fp16 | DataType::Bf16) {
        return Err(Error::invalid_arg(format!(
            "receiving {} data via JSON is not supported. Please use the binary data format for input {name}",
            datatype.as_str()
        )));
    }
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    if datatype == DataType::Bytes {
        let items: Vec<&str> =
            flat.iter().map(|v| string(v)).collect::<Result<_, _>>().map_err(unable("data"))?;
        return Ok(serialize_bytes(items));
    }
    if flat.len() > count {
        return Err(Error::internal(
            "Unable to parse 'data': Shape does not match true shape of 'data' field",
        ));
    }
    let size = datatype.byte_size().expect("fixed-size type");
    let mut out = Vec::with_capacity(count * size);
    for v in flat {
        write_element(datatype, v, &mut out).map_err(unable("data"))?;
    }
    if out.len() != count * size {
        return Err(Error::internal("Failed to parse 'data' field: shape does not match true shape"));
    }
    Ok(out)
}

fn write_element(datatype: DataType, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    macro_rules! int {
        ($ty:ty, $read:expr) => {{
            let n = $read(v)?;
            let n = <$ty>::try_from(n)
                .map_err(|_| format!("value {n} is out of range for {}", datatype.as_str()))?;
            out.extend_from_slice(&n.to_le_bytes());
        }};
    }
    match datatype {
        DataType::Bool => out.push(boolean(v)? as u8),
        DataType::Int8 => int!(i8, signed),
        DataType::Int16 => int!(i16, signed),
        DataType::Int32 => int!(i32, signed),
        DataType::Int64 => int!(i64, signed),
        DataType::Uint8 => int!(u8, unsigned),
        DataType::Uint16 => int!(u16, unsigned),
        DataType::Uint32 => int!(u32, unsigned),
        DataType::Uint64 => int!(u64, unsigned),
        DataType::Fp32 => out.extend_from_slice(&(double(v)? as f32).to_le_bytes()),
        DataType::Fp64 => out.extend_from_slice(&double(v)?.to_le_bytes()),
        DataType::Fp16 | DataType::Bf16 | DataType::Bytes => unreachable!("handled by to_bytes"),
    }
    Ok(())
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
        DataType::Fp16 => nums!(f16, |v: f16| float(v.to_f32())),
        DataType::Bf16 => nums!(bf16, |v: bf16| float(v.to_f32())),
        DataType::Fp32 => nums!(f32, float),
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
    fn every_json_type_round_trips() {
        let cases = [
            (DataType::Bool, json!([true, false])),
            (DataType::Int8, json!([-128, 127])),
            (DataType::Int16, json!([-3, 300])),
            (DataType::Int32, json!([1, -2])),
            (DataType::Int64, json!([i64::MIN, i64::MAX])),
            (DataType::Uint8, json!([0, 255])),
            (DataType::Uint16, json!([65535, 1])),
            (DataType::Uint32, json!([4000000000u32, 0])),
            (DataType::Uint64, json!([u64::MAX, 0])),
            (DataType::Fp32, json!([1.1, -0.5])),
            (DataType::Fp64, json!([1.1, 1e300])),
            (DataType::Bytes, json!(["abc", ""])),
        ];
        for (dt, v) in cases {
            let bytes = to_bytes("x", dt, &v, 2).unwrap();
            assert_eq!(to_json(dt, &bytes), v, "{}", dt.as_str());
        }
    }

    #[test]
    fn half_floats_are_binary_only_and_print_as_numbers() {
        let e = to_bytes("x", DataType::Fp16, &json!([1.0]), 1).unwrap_err();
        assert!(e.message.starts_with("receiving FP16 data via JSON is not supported"));
        assert_eq!(to_json(DataType::Fp16, &f16::from_f32(1.5).to_le_bytes()), json!([1.5]));
    }

    #[test]
    fn counts_and_types_are_checked_as_triton_does() {
        let b = to_bytes("x", DataType::Int32, &json!([[1, 2], [3, 4]]), 4).unwrap();
        assert_eq!(to_json(DataType::Int32, &b), json!([1, 2, 3, 4]));
        let fewer = to_bytes("x", DataType::Int32, &json!([1]), 2).unwrap_err();
        assert_eq!(fewer.message, "Failed to parse 'data' field: shape does not match true shape");
        let more = to_bytes("x", DataType::Int32, &json!([1, 2, 3]), 2).unwrap_err();
        assert_eq!(more.message, "Unable to parse 'data': Shape does not match true shape of 'data' field");
        assert!(to_bytes("x", DataType::Int8, &json!([300]), 1).is_err());
        let wrong = to_bytes("x", DataType::Int32, &json!(["a"]), 1).unwrap_err();
        assert_eq!(
            wrong.message,
            "Unable to parse 'data': attempt to access JSON non-signed-integer as signed-integer"
        );
        assert!(to_bytes("x", DataType::Bytes, &json!([1]), 1).is_err());
        assert!(to_bytes("x", DataType::Uint8, &json!([-1]), 1).is_err());
    }
}
