//! Implicit state (`sequence_batching { state [...] }`): tensors the core keeps for each
//! sequence. A request carries its sequence's state as extra inputs (`input_name`); the model's
//! state outputs (`output_name`) replace it for the next request. A sequence's first request
//! gets the initial state: zeros (1 for each variable dimension), or `initial_state`.
//!
//! Backends see the state tensors as ordinary inputs and outputs: [`backend_config`] lists them
//! in the config a backend loads with.

use std::path::Path;

use nereid_proto::inference::model_config::SchedulingChoice;
use nereid_proto::inference::model_sequence_batching::initial_state::StateData;
use nereid_proto::inference::model_sequence_batching::State;
use nereid_proto::inference::{DataType as ConfigType, ModelConfig, ModelInput, ModelOutput};

use crate::error::{Error, Result};
use crate::tensor::{element_count, DataType, Tensor};

fn states(config: &ModelConfig) -> &[State] {
    match &config.scheduling_choice {
        Some(SchedulingChoice::SequenceBatching(sb)) => &sb.state,
        _ => &[],
    }
}

/// The config a backend loads with: the model's, with its states as inputs and outputs.
pub(crate) fn backend_config(config: &ModelConfig) -> ModelConfig {
    let mut backend = config.clone();
    for s in states(config) {
        if !backend.input.iter().any(|i| i.name == s.input_name) {
            backend.input.push(ModelInput {
                name: s.input_name.clone(),
                data_type: s.data_type,
                dims: s.dims.clone(),
                ..Default::default()
            });
        }
        if !backend.output.iter().any(|o| o.name == s.output_name) {
            backend.output.push(ModelOutput {
                name: s.output_name.clone(),
                data_type: s.data_type,
                dims: s.dims.clone(),
                ..Default::default()
            });
        }
    }
    backend
}

struct Spec {
    output: String,
    /// The state a sequence starts with, named as the input.
    initial: Tensor,
    /// Listed among the model's outputs, so clients may ask for it too.
    exposed: bool,
}

/// A model's states.
pub(crate) struct StateSpecs(Vec<Spec>);

impl StateSpecs {
    pub fn from_config(config: &ModelConfig, model_dir: &Path) -> Result<StateSpecs> {
        let batching = config.max_batch_size > 0;
        let mut specs = Vec::new();
        for s in states(config) {
            let datatype = DataType::from_config(s.data_type).ok_or_else(|| {
                Error::invalid_arg(format!("state '{}' has no valid data_type", s.input_name))
            })?;
            let (dims, data) = initial_state(s, datatype, model_dir)?;
            let shape: Vec<i64> = batching.then_some(1).into_iter().chain(dims).collect();
            specs.push(Spec {
                output: s.output_name.clone(),
                initial: Tensor::new(s.input_name.clone(), datatype, shape, data),
                exposed: config.output.iter().any(|o| o.name == s.output_name),
            });
        }
        Ok(StateSpecs(specs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn initial(&self) -> Vec<Tensor> {
        self.0.iter().map(|s| s.initial.clone()).collect()
    }

    /// Takes the state outputs a request produced into `state` (copies of those the client may
    /// also ask for).
    pub fn capture(&self, state: &mut [Tensor], outputs: &mut Vec<Tensor>) {
        for (spec, kept) in self.0.iter().zip(state.iter_mut()) {
            let Some(pos) = outputs.iter().position(|t| t.name == spec.output) else { continue };
            let tensor = if spec.exposed { outputs[pos].clone() } else { outputs.swap_remove(pos) };
            *kept = Tensor { name: kept.name.clone(), ..tensor };
        }
    }
}

/// The dims and bytes a sequence's state starts with, checked as Triton checks them.
fn initial_state(s: &State, datatype: DataType, model_dir: &Path) -> Result<(Vec<i64>, Vec<u8>)> {
    let input = &s.input_name;
    let zeros = |dims: &[i64]| {
        let count = element_count(dims).unwrap_or(0);
        // BYTES elements are 4-byte lengths: zero bytes are empty strings.
        vec![0u8; count * datatype.byte_size().unwrap_or(4)]
    };
    let initial = match &s.initial_state[..] {
        [] => {
            let dims: Vec<i64> = s.dims.iter().map(|&d| if d == -1 { 1 } else { d }).collect();
            let data = zeros(&dims);
            return Ok((dims, data));
        }
        [initial] => initial,
        more => {
            return Err(Error::invalid_arg(format!(
                "initial_state field for state input '{input}' must contain exactly one or zero element. Found '{}' elements.",
                more.len()
            )))
        }
    };
    if initial.data_type != s.data_type {
        return Err(Error::invalid_arg(format!(
            "The data type used for 'initial_state' field of state '{input}' does not match the state data type."
        )));
    }
    if initial.name.is_empty() {
        return Err(Error::invalid_arg(format!(
            "Field 'name' must be set when using initial_state for state input '{input}'."
        )));
    }
    if initial.dims.len() != s.dims.len() {
        return Err(Error::invalid_arg(format!(
            "Number of dimensions in 'initial_state' doesn't match the size of 'state' dimensions for state input '{input}'. {} != {}",
            initial.dims.len(),
            s.dims.len()
        )));
    }
    for (&d, &want) in initial.dims.iter().zip(&s.dims) {
        if d == -1 {
            return Err(Error::invalid_arg(format!(
                "'initial_state' field for state input name '{input}' contains variable dimensions."
            )));
        }
        if want != -1 && d != want {
            return Err(Error::invalid_arg(format!(
                "'initial_state' dim for input name '{input}' doesn't match 'state' dim description. {d} != {want}"
            )));
        }
    }
    let data = match &initial.state_data {
        Some(StateData::ZeroData(_)) => zeros(&initial.dims),
        Some(StateData::DataFile(file)) => {
            let path = model_dir.join("initial_state").join(file);
            let bytes = std::fs::read(&path).map_err(|e| {
                Error::invalid_arg(format!("failed to read initial state file '{}': {e}", path.display()))
            })?;
            let want = zeros(&initial.dims).len();
            if initial.data_type() != ConfigType::TypeString && bytes.len() < want {
                return Err(Error::invalid_arg(format!(
                    "initial_state setting expects {want} bytes, but the data provided from {file}only has {} bytes.",
                    bytes.len()
                )));
            }
            if initial.data_type() == ConfigType::TypeString {
                bytes
            } else {
                bytes[..want].to_vec()
            }
        }
        None => {
            return Err(Error::invalid_arg(format!(
                "initial_state setting expects state'{input}' to have state_data set"
            )))
        }
    };
    Ok((initial.dims.clone(), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(states: &str, outputs: &str) -> ModelConfig {
        let text = format!(
            r#"name: "m" max_batch_size: 4 sequence_batching {{ state [ {states} ] }}
               input [ {{ name: "IN" data_type: TYPE_INT32 dims: [ 1 ] }} ] output [ {outputs} ]"#
        );
        crate::model_config::parse(&text, Path::new("c")).unwrap()
    }

    const STATE: &str =
        r#"{ input_name: "S_IN" output_name: "S_OUT" data_type: TYPE_INT32 dims: [ -1, 2 ] }"#;

    #[test]
    fn states_start_at_zero_and_follow_the_outputs() {
        let c = config(STATE, "");
        let specs = StateSpecs::from_config(&c, Path::new("/nowhere")).unwrap();
        let mut state = specs.initial();
        assert_eq!((state[0].name.as_str(), &state[0].shape[..]), ("S_IN", &[1, 1, 2][..]));
        assert_eq!(&state[0].data[..], &[0u8; 8][..]);
        let out = Tensor::new("S_OUT", DataType::Int32, vec![1, 3, 2], vec![7u8; 24]);
        let mut outputs = vec![Tensor::new("OUT", DataType::Int32, vec![1, 1], vec![1u8; 4]), out];
        specs.capture(&mut state, &mut outputs);
        assert_eq!(outputs.len(), 1, "a state output not in the config is the core's");
        assert_eq!(
            (state[0].name.as_str(), &state[0].shape[..], state[0].data.len()),
            ("S_IN", &[1, 3, 2][..], 24)
        );

        let exposed = config(STATE, r#"{ name: "S_OUT" data_type: TYPE_INT32 dims: [ -1, 2 ] }"#);
        let specs = StateSpecs::from_config(&exposed, Path::new("/nowhere")).unwrap();
        let mut outputs = vec![Tensor::new("S_OUT", DataType::Int32, vec![1, 1, 2], vec![7u8; 8])];
        specs.capture(&mut specs.initial(), &mut outputs);
        assert_eq!(outputs.len(), 1, "a state output the config lists stays for the client");
        let backend = backend_config(&exposed);
        assert_eq!(backend.input.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["IN", "S_IN"]);
        assert_eq!(backend.output.len(), 1);
    }

    #[test]
    fn initial_state_is_checked() {
        let with = |initial: &str| {
            let s = format!(
                r#"{{ input_name: "S_IN" output_name: "S_OUT" data_type: TYPE_INT32 dims: [ -1 ]
                     initial_state {{ {initial} }} }}"#
            );
            StateSpecs::from_config(&config(&s, ""), Path::new("/nowhere")).map(|s| s.initial())
        };
        let zero = with(r#"data_type: TYPE_INT32 dims: [ 3 ] zero_data: true name: "z""#).unwrap();
        assert_eq!((&zero[0].shape[..], zero[0].data.len()), (&[1, 3][..], 12));
        assert_eq!(
            with(r#"data_type: TYPE_FP32 dims: [ 3 ] zero_data: true name: "z""#).unwrap_err().message,
            "The data type used for 'initial_state' field of state 'S_IN' does not match the state data type."
        );
        assert_eq!(
            with(r#"data_type: TYPE_INT32 dims: [ -1 ] zero_data: true name: "z""#).unwrap_err().message,
            "'initial_state' field for state input name 'S_IN' contains variable dimensions."
        );
        assert!(with(r#"data_type: TYPE_INT32 dims: [ 3 ] zero_data: true"#)
            .unwrap_err()
            .message
            .starts_with("Field 'name' must be set"));
    }
}
