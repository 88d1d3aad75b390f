//! The control inputs a sequence model asks for (START, END, READY, CORRID), as Triton fills
//! them: one value per request, shaped `[1, 1]` when the model batches, else `[1]`.

use nereid_proto::inference::model_config::SchedulingChoice;
use nereid_proto::inference::model_sequence_batching::control::Kind;
use nereid_proto::inference::model_sequence_batching::Control;
use nereid_proto::inference::ModelConfig;

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

pub(crate) struct Controls {
    model: String,
    tensors: Vec<ControlTensor>,
    shape: Vec<i64>,
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

impl Controls {
    pub fn from_config(config: &ModelConfig) -> Controls {
        let mut tensors = Vec::new();
        if let Some(SchedulingChoice::SequenceBatching(sb)) = &config.scheduling_choice {
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
                    tensors.push(ControlTensor { name: input.name.clone(), kind, datatype, values });
                }
            }
        }
        let shape = if config.max_batch_size > 0 { vec![1, 1] } else { vec![1] };
        Controls { model: config.name.clone(), tensors, shape }
    }

    /// Triton's check that the request's correlation id fits the CORRID control's datatype.
    pub fn check_correlation_id(&self, request: &InferRequest) -> Result<()> {
        let Some(c) = self.tensors.iter().find(|c| c.kind == Kind::ControlSequenceCorrid) else {
            return Ok(());
        };
        let string_id = matches!(request.correlation_id, CorrelationId::String(_));
        let fits = if string_id {
            c.datatype == DataType::Bytes
        } else {
            matches!(c.datatype, DataType::Uint64 | DataType::Int64 | DataType::Uint32 | DataType::Int32)
        };
        if fits {
            return Ok(());
        }
        Err(Error::invalid_arg(format!(
            "{}sequence batching control '{}' data-type is '{}', but model '{}' expects '{}'",
            log_prefix(&request.id),
            c.name,
            if string_id { "BYTES" } else { "UINT64" },
            self.model,
            c.datatype.as_str()
        )))
    }

    /// Sets the controls of a request of a sequence, or (`ready` false) of a padding row:
    /// START, END and READY false, CORRID 0.
    pub fn apply(&self, request: &mut InferRequest, ready: bool) {
        for c in &self.tensors {
            let data = match c.kind {
                Kind::ControlSequenceStart => c.values[(ready && request.sequence_start) as usize].clone(),
                Kind::ControlSequenceEnd => c.values[(ready && request.sequence_end) as usize].clone(),
                Kind::ControlSequenceReady => c.values[ready as usize].clone(),
                Kind::ControlSequenceCorrid if ready => corrid_bytes(c.datatype, &request.correlation_id),
                Kind::ControlSequenceCorrid => corrid_bytes(c.datatype, &CorrelationId::None),
            };
            request.inputs.retain(|t| t.name != c.name);
            request.inputs.push(Tensor::new(c.name.clone(), c.datatype, self.shape.clone(), data));
        }
    }
}

fn corrid_bytes(datatype: DataType, id: &CorrelationId) -> Vec<u8> {
    match (datatype, id) {
        (DataType::Bytes, CorrelationId::String(s)) => serialize_bytes([s.as_bytes()]),
        (DataType::Bytes, _) => serialize_bytes([b""]),
        (DataType::Uint32 | DataType::Int32, CorrelationId::Uint(u)) => (*u as u32).to_le_bytes().to_vec(),
        (DataType::Uint32 | DataType::Int32, _) => vec![0; 4],
        (_, CorrelationId::Uint(u)) => u.to_le_bytes().to_vec(),
        _ => vec![0; 8],
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
          control_input [
            { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
            { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] } ] },
            { name: "END" control [ { kind: CONTROL_SEQUENCE_END bool_false_true: [ false, true ] } ] },
            { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] }
          ]
        }"#;

    fn controls() -> Controls {
        Controls::from_config(&crate::model_config::parse(CONFIG, std::path::Path::new("c")).unwrap())
    }

    fn request(id: CorrelationId, start: bool, end: bool) -> InferRequest {
        let mut r = InferRequest::new("seq", None);
        (r.correlation_id, r.sequence_start, r.sequence_end) = (id, start, end);
        r
    }

    fn corrid(r: &InferRequest) -> Vec<Vec<u8>> {
        bytes_elements(&r.input("CORRID").unwrap().data).map(|e| e.unwrap().to_vec()).collect()
    }

    #[test]
    fn controls_follow_the_flags() {
        let c = controls();
        let mut r = request(CorrelationId::String("abc".into()), true, false);
        c.apply(&mut r, true);
        let start = r.input("START").unwrap();
        assert_eq!(
            (start.datatype, &start.shape[..], &start.data[..]),
            (DataType::Int32, &[1, 1][..], &1i32.to_le_bytes()[..])
        );
        assert_eq!(&r.input("READY").unwrap().data[..], &1f32.to_le_bytes()[..]);
        assert_eq!(&r.input("END").unwrap().data[..], &[0u8][..]);
        assert_eq!(corrid(&r), vec![b"abc".to_vec()]);
        let mut r = request(CorrelationId::String("abc".into()), true, true);
        c.apply(&mut r, false);
        assert_eq!(&r.input("START").unwrap().data[..], &0i32.to_le_bytes()[..], "padding is not ready");
        assert_eq!(&r.input("READY").unwrap().data[..], &0f32.to_le_bytes()[..]);
        assert_eq!(&r.input("END").unwrap().data[..], &[0u8][..]);
        assert_eq!(corrid(&r), vec![Vec::<u8>::new()]);
        assert_eq!(r.inputs.len(), 4, "controls are replaced, not added twice");
    }

    #[test]
    fn correlation_id_must_fit_the_control() {
        let c = controls();
        let err = c.check_correlation_id(&request(CorrelationId::Uint(7), true, false)).unwrap_err();
        assert_eq!(
            err.message,
            "[request id: <id_unknown>] sequence batching control 'CORRID' data-type is 'UINT64', but model 'seq' expects 'BYTES'"
        );
        assert!(c.check_correlation_id(&request(CorrelationId::String("s".into()), true, false)).is_ok());
    }
}
