//! Tensors as the core passes them around: a datatype, a shape and the raw bytes.
//!
//! Raw bytes are little-endian and row-major, as on Triton's wire. BYTES tensors hold Triton's
//! serialized form: each element as a 4-byte little-endian length followed by its bytes.

use bytes::Bytes;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
    Bf16,
}

impl DataType {
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
        DataType::Bf16,
    ];

    /// The wire name ("INT32", "BYTES", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
            DataType::Bf16 => "BF16",
        }
    }

    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Size of one element in bytes; `None` for BYTES, whose elements vary.
    pub fn byte_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }

    /// The model config's `DataType` enum value (`TYPE_INT32` = 8, ...).
    pub fn to_config(self) -> i32 {
        match self {
            DataType::Bool => 1,
            DataType::Uint8 => 2,
            DataType::Uint16 => 3,
            DataType::Uint32 => 4,
            DataType::Uint64 => 5,
            DataType::Int8 => 6,
            DataType::Int16 => 7,
            DataType::Int32 => 8,
            DataType::Int64 => 9,
            DataType::Fp16 => 10,
            DataType::Fp32 => 11,
            DataType::Fp64 => 12,
            DataType::Bytes => 13,
            DataType::Bf16 => 14,
        }
    }

    /// From the model config's `DataType` enum value; `None` for `TYPE_INVALID` and unknown values.
    pub fn from_config(value: i32) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.to_config() == value)
    }
}

/// Number of elements of a shape; `None` when a dimension is negative or the product overflows.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub data: Bytes,
}

impl Tensor {
    pub fn new(name: impl Into<String>, datatype: DataType, shape: Vec<i64>, data: impl Into<Bytes>) -> Self {
        Tensor { name: name.into(), datatype, shape, data: data.into() }
    }
}

/// Iterates the elements of serialized BYTES data; yields `Err(())` once at a truncated element.
pub fn bytes_elements(data: &[u8]) -> impl Iterator<Item = std::result::Result<&[u8], ()>> {
    let mut rest = data;
    let mut failed = false;
    std::iter::from_fn(move || {
        if rest.is_empty() || failed {
            return None;
        }
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            failed = true;
            return Some(Err(()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            failed = true;
            return Some(Err(()));
        }
        let (item, tail) = tail.split_at(len);
        rest = tail;
        Some(Ok(item))
    })
}

/// Serializes elements into BYTES data.
pub fn serialize_bytes<I, B>(elements: I) -> Vec<u8>
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    let mut out = Vec::new();
    for e in elements {
        let e = e.as_ref();
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_and_config_values_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::parse(d.as_str()), Some(d));
            assert_eq!(DataType::from_config(d.to_config()), Some(d));
        }
        assert_eq!(DataType::parse("STRING"), None);
        assert_eq!(DataType::from_config(0), None);
    }

    #[test]
    fn element_count_rejects_negative_and_overflow() {
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, -1]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }

    #[test]
    fn bytes_round_trip_and_truncation() {
        let data = serialize_bytes(["ab", "", "xyz"]);
        let items: Vec<_> = bytes_elements(&data).collect::<std::result::Result<_, _>>().unwrap();
        assert_eq!(items, vec![&b"ab"[..], b"", b"xyz"]);
        assert!(bytes_elements(&data[..data.len() - 1]).any(|e| e.is_err()));
    }
}
