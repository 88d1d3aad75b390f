//! The classification extension: top-k of an output as "value:index[:label]" strings.

use crate::error::{Error, Result};
use crate::tensor::{serialize_bytes, DataType, Tensor};

/// Values as numbers, each formatted as C++'s `std::to_string` formats its type.
fn values(t: &Tensor) -> Result<Vec<(f64, String)>> {
    macro_rules! read {
        ($ty:ty, $fmt:expr) => {
            t.data
                .chunks_exact(std::mem::size_of::<$ty>())
                .map(|c| {
                    let v = <$ty>::from_le_bytes(c.try_into().expect("exact chunk"));
                    (v as f64, $fmt(v))
                })
                .collect()
        };
    }
    let int = |v: i128| v.to_string();
    Ok(match t.datatype {
        DataType::Uint8 => read!(u8, |v| int(v as i128)),
        DataType::Uint16 => read!(u16, |v| int(v as i128)),
        DataType::Uint32 => read!(u32, |v| int(v as i128)),
        DataType::Uint64 => read!(u64, |v| int(v as i128)),
        DataType::Int8 => read!(i8, |v| int(v as i128)),
        DataType::Int16 => read!(i16, |v| int(v as i128)),
        DataType::Int32 => read!(i32, |v| int(v as i128)),
        DataType::Int64 => read!(i64, |v| int(v as i128)),
        DataType::Fp32 => read!(f32, |v: f32| format!("{:.6}", v)),
        DataType::Fp64 => read!(f64, |v: f64| format!("{:.6}", v)),
        other => {
            return Err(Error::invalid_arg(format!(
                "class result not available for output due to unsupported type '{}'",
                other.as_str()
            )))
        }
    })
}

/// Replaces `t` by its top `k` classes per batch element (`batch` elements when batching).
pub fn classify(t: &Tensor, k: u32, batching: bool, labels: &[String]) -> Result<Tensor> {
    const MAX_ELEMENTS: usize = 1_000_000;
    let all = values(t)?;
    if all.len() > MAX_ELEMENTS {
        return Err(Error::invalid_arg("classification output tensor too large"));
    }
    let batch = if batching { t.shape.first().copied().unwrap_or(1).max(1) as usize } else { 1 };
    let per = all.len() / batch;
    let count = (k as usize).min(per);
    let mut out = Vec::with_capacity(batch * count);
    for chunk in all.chunks(per.max(1)).take(batch) {
        let mut idx: Vec<usize> = (0..chunk.len()).collect();
        idx.sort_by(|&a, &b| chunk[b].0.partial_cmp(&chunk[a].0).unwrap_or(std::cmp::Ordering::Equal));
        for &i in idx.iter().take(count) {
            let mut s = format!("{}:{}", chunk[i].1, i);
            if let Some(label) = labels.get(i) {
                s.push(':');
                s.push_str(label);
            }
            out.push(s);
        }
    }
    let shape = if batching { vec![batch as i64, count as i64] } else { vec![count as i64] };
    Ok(Tensor::new(t.name.clone(), DataType::Bytes, shape, serialize_bytes(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::bytes_elements;

    fn strings(t: &Tensor) -> Vec<String> {
        bytes_elements(&t.data).map(|e| String::from_utf8(e.unwrap().to_vec()).unwrap()).collect()
    }

    #[test]
    fn top_k_per_batch_element_with_labels() {
        let data: Vec<u8> = [0.1f32, 0.7, 0.2, 5.0, 1.0, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = Tensor::new("OUT", DataType::Fp32, vec![2, 3], data);
        let labels = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let c = classify(&t, 2, true, &labels).unwrap();
        assert_eq!(c.shape, vec![2, 2]);
        assert_eq!(strings(&c), ["0.700000:1:b", "0.200000:2:c", "5.000000:0:a", "3.000000:2:c"]);
    }

    #[test]
    fn integers_and_unsupported_types() {
        let data: Vec<u8> = [3i32, 9, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = Tensor::new("OUT", DataType::Int32, vec![3], data);
        let c = classify(&t, 5, false, &[]).unwrap();
        assert_eq!(c.shape, vec![3]);
        assert_eq!(strings(&c), ["9:1", "3:0", "1:2"]);
        let t = Tensor::new("OUT", DataType::Bytes, vec![1], serialize_bytes(["x"]));
        assert!(classify(&t, 1, false, &[]).unwrap_err().message.contains("unsupported type 'BYTES'"));
    }
}
