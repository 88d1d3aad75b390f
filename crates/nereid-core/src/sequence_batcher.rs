//! The sequence batcher: Triton's sequence rules (correlation ids, START first, idle expiry)
//! and the control inputs (START, END, READY, CORRID) the model's config asks for.
//!
//! Requests of a sequence are prepared here and then scheduled like any other request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nereid_proto::inference::model_config::SchedulingChoice;
use nereid_proto::inference::model_sequence_batching::control::Kind;
use nereid_proto::inference::model_sequence_batching::Control;
use nereid_proto::inference::ModelConfig;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::infer_request::{log_prefix, CorrelationId, InferRequest};
use crate::tensor::{serialize_bytes, DataType, Tensor};

struct ControlTensor {
    name: String,
    kind: Kind,
    datatype: DataType,
    /// Encoded false and true values for START / END / READY.
    values: [Vec<u8>; 2],
}

pub(crate) struct SequenceBatcher {
    model: String,
    batching: bool,
    controls: Vec<ControlTensor>,
    idle: Duration,
    /// Live sequences and when each was last seen.
    active: Mutex<HashMap<CorrelationId, Instant>>,
}

fn flag_values(c: &Control) -> Option<(DataType, [Vec<u8>; 2])> {
    if let [f, t] = c.int32_false_true[..] {
        return Some((DataType::Int32, [f.to_le_bytes().to_vec(), t.to_le_bytes().to_vec()]));
    }
    if let [f, t] = c.fp32_false_true[..] {
        return Some((DataType::Fp32, [f.to_le_bytes().to_vec(), t.to_le_bytes().to_vec()]));
    }
    if let [f, t] = c.bool_false_true[..] {
        return Some((DataType::Bool, [vec![f as u8], vec![t as u8]]));
    }
    None
}

impl SequenceBatcher {
    pub fn from_config(config: &ModelConfig) -> Option<SequenceBatcher> {
        let Some(SchedulingChoice::SequenceBatching(sb)) = &config.scheduling_choice else { return None };
        let mut controls = Vec::new();
        for input in &sb.control_input {
            for c in &input.control {
                let kind = Kind::try_from(c.kind).unwrap_or(Kind::ControlSequenceStart);
                let (datatype, values) = match kind {
                    Kind::ControlSequenceCorrid => (
                        DataType::from_config(c.data_type).unwrap_or(DataType::Uint64),
                        [Vec::new(), Vec::new()],
                    ),
                    _ => match flag_values(c) {
                        Some(v) => v,
                        None => continue,
                    },
                };
                controls.push(ControlTensor { name: input.name.clone(), kind, datatype, values });
            }
        }
        Some(SequenceBatcher {
            model: config.name.clone(),
            batching: config.max_batch_size > 0,
            controls,
            idle: Duration::from_micros(sb.max_sequence_idle_microseconds),
            active: Mutex::new(HashMap::new()),
        })
    }

    /// Checks the request against the sequence rules and adds its control inputs.
    pub fn prepare(&self, request: &mut InferRequest) -> Result<()> {
        let model = &self.model;
        let id_text = match &request.correlation_id {
            CorrelationId::None | CorrelationId::Uint(0) => None,
            CorrelationId::String(s) if s.is_empty() => None,
            CorrelationId::Uint(u) => Some(u.to_string()),
            CorrelationId::String(s) => Some(s.clone()),
        };
        let Some(id_text) = id_text else {
            return Err(Error::invalid_arg(format!(
                "inference request to model '{model}' must specify a non-zero or non-empty correlation ID"
            )));
        };
        if request.batch_size(self.batching) > 1 {
            return Err(Error::invalid_arg(format!(
                "inference request to model '{model}' must specify batch-size 1 due to requirements of sequence batcher"
            )));
        }
        let corrid = self.controls.iter().find(|c| c.kind == Kind::ControlSequenceCorrid);
        if let Some(c) = corrid {
            let string_id = matches!(request.correlation_id, CorrelationId::String(_));
            let fits = if string_id {
                c.datatype == DataType::Bytes
            } else {
                matches!(c.datatype, DataType::Uint64 | DataType::Int64 | DataType::Uint32 | DataType::Int32)
            };
            if !fits {
                return Err(Error::invalid_arg(format!(
                    "{}sequence batching control '{}' data-type is '{}', but model '{model}' expects '{}'",
                    log_prefix(&request.id),
                    c.name,
                    if string_id { "BYTES" } else { "UINT64" },
                    c.datatype.as_str()
                )));
            }
        }
        {
            let now = Instant::now();
            let mut active = self.active.lock();
            active.retain(|_, seen| now.duration_since(*seen) <= self.idle);
            let known = active.contains_key(&request.correlation_id);
            if !request.sequence_start && !known {
                return Err(Error::invalid_arg(format!(
                    "inference request for sequence {id_text} to model '{model}' must specify the START flag on the first request of the sequence"
                )));
            }
            if request.sequence_start && known {
                log::warn!("sequence {id_text} for model '{model}' has a conflict. The previous sequence did not end before this sequence start. Previous sequence will be terminated early.");
            }
            if request.sequence_end {
                active.remove(&request.correlation_id);
            } else {
                active.insert(request.correlation_id.clone(), now);
            }
        }
        let shape = if self.batching { vec![1, 1] } else { vec![1] };
        for c in &self.controls {
            let data = match c.kind {
                Kind::ControlSequenceStart => c.values[request.sequence_start as usize].clone(),
                Kind::ControlSequenceEnd => c.values[request.sequence_end as usize].clone(),
                Kind::ControlSequenceReady => c.values[1].clone(),
                Kind::ControlSequenceCorrid => corrid_bytes(c.datatype, &request.correlation_id),
            };
            request.inputs.retain(|t| t.name != c.name);
            request.inputs.push(Tensor::new(c.name.clone(), c.datatype, shape.clone(), data));
        }
        Ok(())
    }
}

fn corrid_bytes(datatype: DataType, id: &CorrelationId) -> Vec<u8> {
    match (datatype, id) {
        (DataType::Bytes, CorrelationId::String(s)) => serialize_bytes([s.as_bytes()]),
        (DataType::Uint32 | DataType::Int32, CorrelationId::Uint(u)) => (*u as u32).to_le_bytes().to_vec(),
        (_, CorrelationId::Uint(u)) => u.to_le_bytes().to_vec(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::bytes_elements;

    const CONFIG: &str = r#"
        name: "seq"
        max_batch_size: 4
        sequence_batching {
          max_sequence_idle_microseconds: 5000000
          control_input [
            { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
            { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] } ] },
            { name: "END" control [ { kind: CONTROL_SEQUENCE_END bool_false_true: [ false, true ] } ] },
            { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] }
          ]
        }"#;

    fn request(id: &str, start: bool, end: bool) -> InferRequest {
        let mut r = InferRequest::new("seq", None);
        r.correlation_id = CorrelationId::String(id.into());
        r.sequence_start = start;
        r.sequence_end = end;
        r
    }

    fn batcher() -> SequenceBatcher {
        let config = crate::model_config::parse(CONFIG, std::path::Path::new("config.pbtxt")).unwrap();
        SequenceBatcher::from_config(&config).unwrap()
    }

    #[test]
    fn controls_follow_the_flags() {
        let b = batcher();
        let mut r = request("abc", true, false);
        b.prepare(&mut r).unwrap();
        let start = r.input("START").unwrap();
        assert_eq!(
            (start.datatype, &start.shape[..], &start.data[..]),
            (DataType::Int32, &[1, 1][..], &1i32.to_le_bytes()[..])
        );
        assert_eq!(&r.input("READY").unwrap().data[..], &1f32.to_le_bytes()[..]);
        assert_eq!(&r.input("END").unwrap().data[..], &[0u8][..]);
        let corrid: Vec<_> =
            bytes_elements(&r.input("CORRID").unwrap().data).map(|e| e.unwrap().to_vec()).collect();
        assert_eq!(corrid, vec![b"abc".to_vec()]);
        let mut r = request("abc", false, true);
        b.prepare(&mut r).unwrap();
        assert_eq!(&r.input("START").unwrap().data[..], &0i32.to_le_bytes()[..]);
        assert_eq!(&r.input("END").unwrap().data[..], &[1u8][..]);
    }

    #[test]
    fn sequence_rules() {
        let b = batcher();
        let err = b.prepare(&mut request("x", false, false)).unwrap_err();
        assert!(
            err.message.contains("must specify the START flag on the first request of the sequence"),
            "{err}"
        );
        let err = b.prepare(&mut request("", true, false)).unwrap_err();
        assert!(err.message.contains("must specify a non-zero or non-empty correlation ID"));
        let mut r = request("y", true, false);
        r.correlation_id = CorrelationId::Uint(7);
        let err = b.prepare(&mut r).unwrap_err();
        assert!(err.message.contains("data-type is 'UINT64', but model 'seq' expects 'BYTES'"), "{err}");
        b.prepare(&mut request("z", true, true)).unwrap();
        assert!(b.prepare(&mut request("z", false, false)).is_err(), "an ended sequence is gone");
    }
}
