//! Shape and batch arithmetic: config `reshape`, joining requests along the batch dimension and
//! splitting outputs back. Raw data and serialized BYTES data are both row-major with the batch
//! dimension outermost, so joining is concatenation; splitting BYTES walks the elements.

use nereid_core::tensor::{bytes_elements, element_count, Tensor};

/// Maps a shape between config `dims` and `reshape.shape` (either way): the variable (-1) dims
/// of `from` give their sizes, in order, to the variable dims of `to`, as Triton does.
pub(crate) fn reshape(shape: &[i64], from: &[i64], to: &[i64]) -> Option<Vec<i64>> {
    if shape.len() != from.len() {
        return None;
    }
    let mut sizes = shape.iter().zip(from).filter(|(_, &f)| f == -1).map(|(&s, _)| s);
    let mapped =
        to.iter().map(|&t| if t == -1 { sizes.next() } else { Some(t) }).collect::<Option<Vec<i64>>>()?;
    sizes.next().is_none().then_some(mapped)
}

/// Joins tensors of equal non-batch shape along dimension 0.
pub(crate) fn join(tensors: &[&Tensor]) -> Tensor {
    let first = tensors[0];
    if tensors.len() == 1 {
        return first.clone();
    }
    let mut shape = first.shape.clone();
    shape[0] = tensors.iter().map(|t| t.shape[0]).sum();
    let mut data = Vec::with_capacity(tensors.iter().map(|t| t.data.len()).sum());
    for t in tensors {
        data.extend_from_slice(&t.data);
    }
    Tensor::new(first.name.clone(), first.datatype, shape, data)
}

/// Splits a tensor along dimension 0 into parts of `sizes` rows (without copying raw data).
pub(crate) fn split(tensor: Tensor, sizes: &[usize]) -> Result<Vec<Tensor>, String> {
    if sizes.len() == 1 {
        return Ok(vec![tensor]);
    }
    let total: usize = sizes.iter().sum();
    let rows = tensor.shape.first().map(|&d| d as usize);
    if rows != Some(total) {
        return Err(format!(
            "output '{}' has shape {:?}, expected a batch dimension of {total}",
            tensor.name, tensor.shape
        ));
    }
    let row_elements = element_count(&tensor.shape[1..]).unwrap_or(0);
    // Byte offset of every row boundary.
    let boundaries: Vec<usize> = match tensor.datatype.byte_size() {
        Some(size) => (0..=total).map(|row| row * row_elements * size).collect(),
        None => {
            let malformed = || format!("output '{}' has BYTES data not matching its shape", tensor.name);
            let mut offsets = vec![0];
            let mut offset = 0;
            let mut count = 0;
            for element in bytes_elements(&tensor.data) {
                offset += 4 + element.map_err(|()| malformed())?.len();
                count += 1;
                if count % row_elements.max(1) == 0 {
                    offsets.push(offset);
                }
            }
            if count != total * row_elements {
                return Err(malformed());
            }
            offsets.resize(total + 1, offset);
            offsets
        }
    };
    if boundaries[total] != tensor.data.len() {
        return Err(format!(
            "output '{}' has {} bytes, not matching its shape",
            tensor.name,
            tensor.data.len()
        ));
    }
    let mut parts = Vec::with_capacity(sizes.len());
    let mut row = 0;
    for &n in sizes {
        let mut shape = tensor.shape.clone();
        shape[0] = n as i64;
        let data = tensor.data.slice(boundaries[row]..boundaries[row + n]);
        parts.push(Tensor::new(tensor.name.clone(), tensor.datatype, shape, data));
        row += n;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use nereid_core::tensor::{serialize_bytes, DataType};

    use super::*;

    #[test]
    fn reshape_carries_variable_dims() {
        assert_eq!(reshape(&[2, 6], &[-1, 6], &[-1, 2, 3]), Some(vec![2, 2, 3]));
        assert_eq!(reshape(&[2, 2, 3], &[-1, 2, 3], &[-1, 6]), Some(vec![2, 6]));
        assert_eq!(reshape(&[1], &[1], &[]), Some(vec![]));
        assert_eq!(reshape(&[], &[], &[1]), Some(vec![1]));
        assert_eq!(reshape(&[4, 5], &[-1, -1], &[5, -1, -1]), Some(vec![5, 4, 5]));
        assert_eq!(reshape(&[4], &[-1, 2], &[-1]), None, "rank differs");
        assert_eq!(reshape(&[4, 5], &[-1, -1], &[-1]), None, "a variable dim is lost");
        assert_eq!(reshape(&[4], &[-1], &[-1, -1]), None, "a variable dim has no size");
    }

    #[test]
    fn join_then_split_fixed_size() {
        let a = Tensor::new("x", DataType::Int32, vec![1, 2], [1i32, 2].map(i32::to_le_bytes).concat());
        let b = Tensor::new("x", DataType::Int32, vec![2, 2], [3i32, 4, 5, 6].map(i32::to_le_bytes).concat());
        let joined = join(&[&a, &b]);
        assert_eq!(joined.shape, vec![3, 2]);
        assert_eq!(joined.data.len(), 24);
        assert_eq!(split(joined, &[1, 2]).unwrap(), vec![a, b]);
    }

    #[test]
    fn join_then_split_bytes() {
        let a = Tensor::new("s", DataType::Bytes, vec![2, 2], serialize_bytes(["a", "", "bc", "d"]));
        let b = Tensor::new("s", DataType::Bytes, vec![1, 2], serialize_bytes(["\0x", "yz"]));
        let joined = join(&[&a, &b]);
        assert_eq!(joined.shape, vec![3, 2]);
        assert_eq!(split(joined, &[2, 1]).unwrap(), vec![a, b]);
    }

    #[test]
    fn split_rejects_a_wrong_batch() {
        let t = Tensor::new("x", DataType::Fp32, vec![2, 1], vec![0u8; 8]);
        assert!(split(t.clone(), &[1, 2]).unwrap_err().contains("batch dimension of 3"));
        let t = Tensor::new("x", DataType::Fp32, vec![2, 1], vec![0u8; 7]);
        assert!(split(t, &[1, 1]).is_err());
    }
}
