//! The shared memory RPCs, and the `shared_memory_*` parameters of request tensors
//! (Triton's `ParseSharedMemoryParams`, with its texts).

use std::collections::HashMap;

use nereid_core::shared_memory_manager::SharedMemoryManager;
use nereid_core::{Error, Result};
use nereid_proto::inference::infer_parameter::ParameterChoice;
use nereid_proto::inference::*;

pub fn system_status(
    shm: &SharedMemoryManager,
    r: SystemSharedMemoryStatusRequest,
) -> Result<SystemSharedMemoryStatusResponse> {
    let regions = shm.system_status(&r.name)?.into_iter().map(|s| {
        let status = system_shared_memory_status_response::RegionStatus {
            name: s.name.clone(),
            key: s.key,
            offset: s.offset,
            byte_size: s.byte_size,
        };
        (s.name, status)
    });
    Ok(SystemSharedMemoryStatusResponse { regions: regions.collect() })
}

pub fn cuda_status(
    shm: &SharedMemoryManager,
    r: CudaSharedMemoryStatusRequest,
) -> Result<CudaSharedMemoryStatusResponse> {
    let regions = shm.cuda_status(&r.name)?.into_iter().map(|s| {
        let status = cuda_shared_memory_status_response::RegionStatus {
            name: s.name.clone(),
            device_id: s.device_id,
            byte_size: s.byte_size,
        };
        (s.name, status)
    });
    Ok(CudaSharedMemoryStatusResponse { regions: regions.collect() })
}

/// Where a tensor's data lies in a region.
#[derive(Debug, PartialEq)]
pub struct RegionSlice {
    pub region: String,
    pub offset: u64,
    pub byte_size: u64,
}

/// A tensor's `shared_memory_region`, `shared_memory_offset` and `shared_memory_byte_size`.
/// Offsets and sizes are int64 on the wire; negative ones become huge, as in Triton, and fail
/// the manager's bounds checks.
pub fn region_slice(
    tensor: &str,
    parameters: &HashMap<String, InferParameter>,
) -> Result<Option<RegionSlice>> {
    let choice = |key: &str| parameters.get(key).map(|p| p.parameter_choice.as_ref());
    let region = match choice("shared_memory_region") {
        None => None,
        Some(Some(ParameterChoice::StringParam(s))) => Some(s.clone()),
        Some(_) => {
            return Err(Error::invalid_arg(format!(
                "invalid value type for 'shared_memory_region' parameter for tensor '{tensor}', expected string_param."
            )))
        }
    };
    let int64 = |key: &str| -> Result<Option<i64>> {
        match choice(key) {
            None => Ok(None),
            Some(_) if region.is_none() => Err(Error::invalid_arg(format!(
                "'{key}' can not be specified without 'shared_memory_region' parameter for tensor '{tensor}'"
            ))),
            Some(Some(ParameterChoice::Int64Param(v))) => Ok(Some(*v)),
            Some(_) => Err(Error::invalid_arg(format!(
                "invalid value type for '{key}' parameter for tensor '{tensor}', expected int64_param."
            ))),
        }
    };
    let offset = int64("shared_memory_offset")?.unwrap_or(0);
    let byte_size = int64("shared_memory_byte_size")?;
    let Some(region) = region else { return Ok(None) };
    let byte_size = byte_size.ok_or_else(|| {
        Error::invalid_arg(format!(
            "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter for tensor '{tensor}'"
        ))
    })?;
    Ok(Some(RegionSlice { region, offset: offset as u64, byte_size: byte_size as u64 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(entries: &[(&str, ParameterChoice)]) -> HashMap<String, InferParameter> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), InferParameter { parameter_choice: Some(v.clone()) }))
            .collect()
    }

    #[test]
    fn parameters_give_the_slice_with_tritons_errors() {
        let region = ("shared_memory_region", ParameterChoice::StringParam("r".into()));
        let size = ("shared_memory_byte_size", ParameterChoice::Int64Param(8));
        assert_eq!(region_slice("t", &params(&[])).unwrap(), None);
        let slice = region_slice("t", &params(&[region.clone(), size.clone()])).unwrap().unwrap();
        assert_eq!(slice, RegionSlice { region: "r".into(), offset: 0, byte_size: 8 });
        let negative = ("shared_memory_offset", ParameterChoice::Int64Param(-1));
        let slice = region_slice("t", &params(&[region.clone(), size.clone(), negative.clone()])).unwrap();
        assert_eq!(slice.unwrap().offset, u64::MAX);
        let cases = [
            (
                params(std::slice::from_ref(&region)),
                "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter for tensor 't'",
            ),
            (
                params(std::slice::from_ref(&size)),
                "'shared_memory_byte_size' can not be specified without 'shared_memory_region' parameter for tensor 't'",
            ),
            (
                params(&[negative]),
                "'shared_memory_offset' can not be specified without 'shared_memory_region' parameter for tensor 't'",
            ),
            (
                params(&[("shared_memory_region", ParameterChoice::Int64Param(1))]),
                "invalid value type for 'shared_memory_region' parameter for tensor 't', expected string_param.",
            ),
            (
                params(&[region, ("shared_memory_byte_size", ParameterChoice::StringParam("8".into()))]),
                "invalid value type for 'shared_memory_byte_size' parameter for tensor 't', expected int64_param.",
            ),
        ];
        for (p, text) in cases {
            assert_eq!(region_slice("t", &p).unwrap_err().message, text);
        }
    }
}
