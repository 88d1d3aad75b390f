//! Typed `InferTensorContents` as the raw little-endian bytes the core takes, with Triton's
//! checks and texts (`InferGRPCToInput`): one field per tensor, of the tensor's datatype.

use nereid_core::tensor::{serialize_bytes, DataType};
use nereid_core::{Error, Result};
use nereid_proto::inference::InferTensorContents;

/// Collects the one non-empty field, as Triton does: a second one, or one of another type, fails.
struct Collector<'a> {
    input: &'a str,
    model: &'a str,
    datatype: DataType,
    data: Option<Vec<u8>>,
}

impl Collector<'_> {
    fn add(&mut self, present: bool, got: DataType, bytes: impl FnOnce() -> Vec<u8>) -> Result<()> {
        if !present {
            return Ok(());
        }
        let (input, model) = (self.input, self.model);
        if self.data.is_some() {
            return Err(Error::invalid_arg(format!(
                "unexpected explicit tensor data for input tensor '{input}' for model '{model}', binary data was already supplied."
            )));
        }
        if got != self.datatype {
            return Err(Error::invalid_arg(format!(
                "unexpected explicit tensor data for input tensor '{input}' for model '{model}' of type '{}', expected datatype '{}'",
                got.as_str(),
                self.datatype.as_str()
            )));
        }
        self.data = Some(bytes());
        Ok(())
    }
}

fn le<T: Copy, const N: usize>(values: &[T], to_bytes: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_bytes(v)).collect()
}

/// The tensor's data from its typed contents. INT8/INT16 and UINT8/UINT16 travel in the 32-bit
/// fields and are narrowed; FP16/BF16 have no typed field (raw contents only).
pub fn typed_to_bytes(
    input: &str,
    model: &str,
    datatype: DataType,
    c: &InferTensorContents,
) -> Result<Vec<u8>> {
    let mut out = Collector { input, model, datatype, data: None };
    out.add(!c.bool_contents.is_empty(), DataType::Bool, || {
        c.bool_contents.iter().map(|&b| u8::from(b)).collect()
    })?;
    let int_type = match datatype {
        DataType::Int8 | DataType::Int16 => datatype,
        _ => DataType::Int32,
    };
    out.add(!c.int_contents.is_empty(), int_type, || match int_type {
        DataType::Int8 => le(&c.int_contents, |v| (v as i8).to_le_bytes()),
        DataType::Int16 => le(&c.int_contents, |v| (v as i16).to_le_bytes()),
        _ => le(&c.int_contents, i32::to_le_bytes),
    })?;
    out.add(!c.int64_contents.is_empty(), DataType::Int64, || le(&c.int64_contents, i64::to_le_bytes))?;
    let uint_type = match datatype {
        DataType::Uint8 | DataType::Uint16 => datatype,
        _ => DataType::Uint32,
    };
    out.add(!c.uint_contents.is_empty(), uint_type, || match uint_type {
        DataType::Uint8 => le(&c.uint_contents, |v| (v as u8).to_le_bytes()),
        DataType::Uint16 => le(&c.uint_contents, |v| (v as u16).to_le_bytes()),
        _ => le(&c.uint_contents, u32::to_le_bytes),
    })?;
    out.add(!c.uint64_contents.is_empty(), DataType::Uint64, || le(&c.uint64_contents, u64::to_le_bytes))?;
    out.add(!c.fp32_contents.is_empty(), DataType::Fp32, || le(&c.fp32_contents, f32::to_le_bytes))?;
    out.add(!c.fp64_contents.is_empty(), DataType::Fp64, || le(&c.fp64_contents, f64::to_le_bytes))?;
    out.add(!c.bytes_contents.is_empty(), DataType::Bytes, || serialize_bytes(&c.bytes_contents))?;
    // Contents with every field empty is an empty tensor, as in Triton.
    Ok(out.data.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(datatype: DataType, c: InferTensorContents) -> Result<Vec<u8>> {
        typed_to_bytes("x", "m", datatype, &c)
    }

    #[test]
    fn every_type_becomes_little_endian_bytes() {
        let c = InferTensorContents::default;
        assert_eq!(
            bytes(DataType::Bool, InferTensorContents { bool_contents: vec![true, false], ..c() }).unwrap(),
            [1, 0]
        );
        assert_eq!(
            bytes(DataType::Int8, InferTensorContents { int_contents: vec![-1, 2], ..c() }).unwrap(),
            [0xff, 2]
        );
        assert_eq!(
            bytes(DataType::Int16, InferTensorContents { int_contents: vec![-2, 258], ..c() }).unwrap(),
            [0xfe, 0xff, 2, 1]
        );
        assert_eq!(
            bytes(DataType::Int32, InferTensorContents { int_contents: vec![-2], ..c() }).unwrap(),
            (-2i32).to_le_bytes()
        );
        assert_eq!(
            bytes(DataType::Int64, InferTensorContents { int64_contents: vec![-3], ..c() }).unwrap(),
            (-3i64).to_le_bytes()
        );
        assert_eq!(
            bytes(DataType::Uint8, InferTensorContents { uint_contents: vec![255, 7], ..c() }).unwrap(),
            [255, 7]
        );
        assert_eq!(
            bytes(DataType::Uint16, InferTensorContents { uint_contents: vec![513], ..c() }).unwrap(),
            [1, 2]
        );
        assert_eq!(
            bytes(DataType::Uint32, InferTensorContents { uint_contents: vec![0x0102_0304], ..c() }).unwrap(),
            [4, 3, 2, 1]
        );
        assert_eq!(
            bytes(DataType::Uint64, InferTensorContents { uint64_contents: vec![1], ..c() }).unwrap(),
            1u64.to_le_bytes()
        );
        assert_eq!(
            bytes(DataType::Fp32, InferTensorContents { fp32_contents: vec![1.5], ..c() }).unwrap(),
            1.5f32.to_le_bytes()
        );
        assert_eq!(
            bytes(DataType::Fp64, InferTensorContents { fp64_contents: vec![-0.25], ..c() }).unwrap(),
            (-0.25f64).to_le_bytes()
        );
        let strings = InferTensorContents { bytes_contents: vec![b"ab".to_vec(), vec![]], ..c() };
        assert_eq!(bytes(DataType::Bytes, strings).unwrap(), [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(bytes(DataType::Fp32, c()).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn wrong_or_second_field_gets_tritons_text() {
        let wrong = InferTensorContents { int_contents: vec![1], ..Default::default() };
        assert_eq!(
            bytes(DataType::Fp32, wrong).unwrap_err().message,
            "unexpected explicit tensor data for input tensor 'x' for model 'm' of type 'INT32', expected datatype 'FP32'"
        );
        let fp16 = InferTensorContents { fp32_contents: vec![1.0], ..Default::default() };
        assert!(bytes(DataType::Fp16, fp16).is_err());
        let two =
            InferTensorContents { fp32_contents: vec![1.0], fp64_contents: vec![1.0], ..Default::default() };
        assert_eq!(
            bytes(DataType::Fp32, two).unwrap_err().message,
            "unexpected explicit tensor data for input tensor 'x' for model 'm', binary data was already supplied."
        );
    }
}
