//! Triton datatypes ↔ ONNX tensor element types. BYTES is ONNX's string tensor.

use nereid_core::tensor::DataType;
use ort::value::TensorElementType as Onnx;

pub(crate) fn to_onnx(datatype: DataType) -> Onnx {
    match datatype {
        DataType::Bool => Onnx::Bool,
        DataType::Uint8 => Onnx::Uint8,
        DataType::Uint16 => Onnx::Uint16,
        DataType::Uint32 => Onnx::Uint32,
        DataType::Uint64 => Onnx::Uint64,
        DataType::Int8 => Onnx::Int8,
        DataType::Int16 => Onnx::Int16,
        DataType::Int32 => Onnx::Int32,
        DataType::Int64 => Onnx::Int64,
        DataType::Fp16 => Onnx::Float16,
        DataType::Fp32 => Onnx::Float32,
        DataType::Fp64 => Onnx::Float64,
        DataType::Bytes => Onnx::String,
        DataType::Bf16 => Onnx::Bfloat16,
    }
}

/// `None` for element types Triton has no datatype for (complex, 8-bit floats, 4-bit ints...).
pub(crate) fn from_onnx(element: Onnx) -> Option<DataType> {
    DataType::ALL.into_iter().find(|&d| to_onnx(d) == element)
}

/// ONNX Runtime's name for a datatype's element type (Triton's `OnnxDataTypeName`).
pub(crate) fn onnx_name(datatype: DataType) -> &'static str {
    match datatype {
        DataType::Bool => "BOOL",
        DataType::Uint8 => "UINT8",
        DataType::Uint16 => "UINT16",
        DataType::Uint32 => "UINT32",
        DataType::Uint64 => "UINT64",
        DataType::Int8 => "INT8",
        DataType::Int16 => "INT16",
        DataType::Int32 => "INT32",
        DataType::Int64 => "INT64",
        DataType::Fp16 => "FLOAT16",
        DataType::Fp32 => "FLOAT",
        DataType::Fp64 => "DOUBLE",
        DataType::Bytes => "STRING",
        DataType::Bf16 => "BFLOAT16",
    }
}

/// The model config's name for a datatype (`TYPE_FP32`, `TYPE_STRING` for BYTES), as in messages.
pub(crate) fn config_name(datatype: DataType) -> &'static str {
    nereid_proto::inference::DataType::try_from(datatype.to_config())
        .map(|d| d.as_str_name())
        .unwrap_or("TYPE_INVALID")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_datatype_round_trips() {
        for d in DataType::ALL {
            assert_eq!(from_onnx(to_onnx(d)), Some(d), "{d:?}");
        }
        assert_eq!(to_onnx(DataType::Bytes), Onnx::String);
        assert_eq!(to_onnx(DataType::Bf16), Onnx::Bfloat16);
    }

    #[test]
    fn onnx_only_types_have_no_datatype() {
        for t in [Onnx::Complex64, Onnx::Float8E4M3FN, Onnx::Int4, Onnx::Undefined] {
            assert_eq!(from_onnx(t), None, "{t:?}");
        }
    }

    #[test]
    fn config_names() {
        assert_eq!(config_name(DataType::Fp32), "TYPE_FP32");
        assert_eq!(config_name(DataType::Bytes), "TYPE_STRING");
        assert_eq!(config_name(DataType::Bf16), "TYPE_BF16");
        assert_eq!(onnx_name(DataType::Fp32), "FLOAT");
        assert_eq!(onnx_name(DataType::Bytes), "STRING");
    }
}
