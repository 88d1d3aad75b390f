//! Copies between the core's tensors and ONNX Runtime values.
//!
//! Data is copied as raw bytes, which keeps one path for every fixed-size type (FP16 and BF16
//! included). String elements go through the C API directly: `ort`'s safe string API wants
//! NUL-free input and UTF-8 output, but BYTES elements are arbitrary bytes.

use std::ptr;

use nereid_core::tensor::{bytes_elements, element_count, serialize_bytes, DataType, Tensor};
use ort::memory::Allocator;
use ort::value::{DynTensor, DynTensorValueType, DynValue, ValueType};
use ort::AsPointer;

use crate::datatype;

// Triton's wire data is little-endian; ONNX Runtime's memory is native.
#[cfg(target_endian = "big")]
compile_error!("tensor data is copied as little-endian bytes");

/// Builds an ONNX Runtime tensor of `datatype` and `shape` from the core's data.
pub(crate) fn to_ort(datatype: DataType, shape: &[i64], data: &[u8]) -> Result<DynTensor, String> {
    // Checked before allocating, so a bad shape cannot ask for a huge tensor.
    let count = element_count(shape).ok_or_else(|| format!("invalid shape {shape:?}"))?;
    let elements = match datatype.byte_size() {
        Some(size) if count.checked_mul(size) == Some(data.len()) => Vec::new(),
        Some(_) => {
            return Err(format!("{} bytes of data for shape {shape:?} of {}", data.len(), datatype.as_str()))
        }
        None => {
            let elements: Vec<&[u8]> =
                bytes_elements(data).collect::<Result<_, ()>>().map_err(|()| "malformed BYTES data")?;
            if elements.len() != count {
                return Err(format!("{} BYTES elements for shape {shape:?}", elements.len()));
            }
            elements
        }
    };
    let element = datatype::to_onnx(datatype);
    let mut tensor =
        DynTensor::new(&Allocator::default(), element, shape.to_vec()).map_err(|e| e.to_string())?;
    if datatype == DataType::Bytes {
        for (index, element) in elements.into_iter().enumerate() {
            let mut buffer = ptr::null_mut();
            // SAFETY: `index` is one of the tensor's `count` elements; ONNX Runtime resizes that
            // element to `element.len()` bytes and returns its buffer, which we fill.
            unsafe {
                ort::Error::result_from_status((ort::api().GetResizedStringTensorElementBuffer)(
                    tensor.ptr_mut(),
                    index,
                    element.len(),
                    &mut buffer,
                ))
                .map_err(|e| e.to_string())?;
                ptr::copy_nonoverlapping(element.as_ptr(), buffer.cast::<u8>(), element.len());
            }
        }
    } else if !data.is_empty() {
        if tensor.size() != Some(data.len()) {
            return Err(format!(
                "ONNX Runtime allocated {:?} bytes for {} bytes of data",
                tensor.size(),
                data.len()
            ));
        }
        // SAFETY: the tensor was just allocated on the CPU with exactly `data.len()` bytes.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), tensor.data_ptr_mut().cast::<u8>(), data.len()) };
    }
    Ok(tensor)
}

/// Reads an ONNX Runtime output into a core tensor named `name`.
pub(crate) fn from_ort(name: &str, value: DynValue) -> Result<Tensor, String> {
    let ValueType::Tensor { ty, shape, .. } = value.dtype() else {
        return Err(format!("output '{name}' is a {}, not a tensor", value.dtype()));
    };
    let datatype =
        datatype::from_onnx(*ty).ok_or_else(|| format!("output '{name}' has unsupported type {ty}"))?;
    let shape = shape.to_vec();
    let tensor = value.downcast::<DynTensorValueType>().map_err(|e| e.to_string())?;
    let data = if datatype == DataType::Bytes {
        let count = element_count(&shape).ok_or("invalid output shape")?;
        read_strings(&tensor, count)?
    } else {
        if !tensor.memory_info().is_cpu_accessible() {
            return Err(format!("output '{name}' is not in CPU memory"));
        }
        let len = tensor.size().ok_or("unknown output size")?;
        if len == 0 {
            Vec::new()
        } else {
            // SAFETY: a CPU tensor's data is `len` readable bytes while `tensor` lives.
            unsafe { std::slice::from_raw_parts(tensor.data_ptr().cast::<u8>(), len) }.to_vec()
        }
    };
    Ok(Tensor::new(name, datatype, shape, data))
}

/// The `count` elements of a string tensor, serialized as BYTES data.
fn read_strings(tensor: &DynTensor, count: usize) -> Result<Vec<u8>, String> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let api = ort::api();
    let mut total = 0;
    let mut offsets = vec![0usize; count + 1];
    let mut content = Vec::new();
    // SAFETY: the buffers are sized as ONNX Runtime asks: `total` content bytes and one offset
    // per element (the extra last slot is ours).
    unsafe {
        ort::Error::result_from_status((api.GetStringTensorDataLength)(tensor.ptr(), &mut total))
            .map_err(|e| e.to_string())?;
        content.resize(total, 0u8);
        ort::Error::result_from_status((api.GetStringTensorContent)(
            tensor.ptr(),
            content.as_mut_ptr().cast(),
            total,
            offsets.as_mut_ptr(),
            count,
        ))
        .map_err(|e| e.to_string())?;
    }
    offsets[count] = total;
    let elements = offsets
        .windows(2)
        .map(|w| content.get(w[0]..w[1]))
        .collect::<Option<Vec<&[u8]>>>()
        .ok_or("string tensor offsets out of range")?;
    Ok(serialize_bytes(elements))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_not_matching_the_shape_is_refused_before_allocating() {
        assert!(to_ort(DataType::Int32, &[2], &[0; 7]).unwrap_err().contains("7 bytes"));
        assert!(to_ort(DataType::Fp32, &[i64::MAX, 4], &[]).unwrap_err().contains("invalid shape"));
        assert!(to_ort(DataType::Fp64, &[1 << 40], &[]).unwrap_err().contains("0 bytes"));
        assert!(to_ort(DataType::Int8, &[-1], &[]).unwrap_err().contains("invalid shape"));
        let one = serialize_bytes(["a"]);
        assert!(to_ort(DataType::Bytes, &[2], &one).unwrap_err().contains("1 BYTES elements"));
        assert!(to_ort(DataType::Bytes, &[1], &one[..3]).unwrap_err().contains("malformed"));
    }
}
