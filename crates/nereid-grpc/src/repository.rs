//! The model repository extension's wire forms: index rows and load / unload parameters, with
//! Triton's texts (`grpc_server.cc`).

use std::collections::HashMap;

use nereid_core::model_repository_manager::{IndexEntry, LoadOverride};
use nereid_core::{Error, Result};
use nereid_proto::inference::model_repository_parameter::ParameterChoice;
use nereid_proto::inference::repository_index_response::ModelIndex;
use nereid_proto::inference::ModelRepositoryParameter;

/// Triton serves one logical repository; naming one is refused.
pub fn check_repository_name(name: &str) -> Result<()> {
    if name.is_empty() {
        Ok(())
    } else {
        Err(Error::unsupported("'repository_name' specification is not supported"))
    }
}

pub fn index_row(e: IndexEntry) -> ModelIndex {
    ModelIndex {
        name: e.name,
        version: e.version.map(|v| v.to_string()).unwrap_or_default(),
        state: e.state.map(|s| s.as_str().to_string()).unwrap_or_default(),
        reason: e.reason,
    }
}

/// `config` (string) and `file:<path>` (bytes) parameters; `None` when there are none.
pub fn load_override(params: HashMap<String, ModelRepositoryParameter>) -> Result<Option<LoadOverride>> {
    if params.is_empty() {
        return Ok(None);
    }
    let mut o = LoadOverride::default();
    for (name, param) in params {
        match (name.as_str(), param.parameter_choice) {
            ("config", Some(ParameterChoice::StringParam(s))) => o.config_json = Some(s),
            ("config", _) => {
                return Err(Error::invalid_arg(format!(
                    "invalid value type for load parameter '{name}', expected string_param."
                )))
            }
            (n, choice) if n.starts_with("file:") => match choice {
                Some(ParameterChoice::BytesParam(b)) => {
                    o.files.insert(n["file:".len()..].to_string(), b);
                }
                _ => {
                    return Err(Error::invalid_arg(format!(
                        "invalid value type for load parameter '{name}', expected bytes_param."
                    )))
                }
            },
            _ => return Err(Error::invalid_arg(format!("unrecognized load parameter '{name}'."))),
        }
    }
    Ok(Some(o))
}

/// Checks `unload_dependents`; the core has no dependent models (ensembles) yet, so it changes nothing.
pub fn check_unload_params(params: &HashMap<String, ModelRepositoryParameter>) -> Result<()> {
    match params.get("unload_dependents").map(|p| &p.parameter_choice) {
        None | Some(Some(ParameterChoice::BoolParam(_))) => Ok(()),
        Some(_) => Err(Error::invalid_arg(
            "invalid value type for 'unload_dependents' parameter, expected bool_param.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nereid_core::model_repository_manager::ModelState;

    fn p(choice: ParameterChoice) -> ModelRepositoryParameter {
        ModelRepositoryParameter { parameter_choice: Some(choice) }
    }

    #[test]
    fn load_parameters_become_overrides() {
        assert!(load_override(HashMap::new()).unwrap().is_none());
        let params = HashMap::from([
            ("config".to_string(), p(ParameterChoice::StringParam("{}".into()))),
            ("file:1/model.onnx".to_string(), p(ParameterChoice::BytesParam(vec![1, 2]))),
        ]);
        let o = load_override(params).unwrap().unwrap();
        assert_eq!(o.config_json.as_deref(), Some("{}"));
        assert_eq!(o.files["1/model.onnx"], [1, 2]);
    }

    #[test]
    fn bad_load_parameters_get_tritons_text() {
        let err = |name: &str, choice| {
            load_override(HashMap::from([(name.to_string(), p(choice))])).unwrap_err().message
        };
        assert_eq!(
            err("config", ParameterChoice::BoolParam(true)),
            "invalid value type for load parameter 'config', expected string_param."
        );
        assert_eq!(
            err("file:1/m", ParameterChoice::StringParam("x".into())),
            "invalid value type for load parameter 'file:1/m', expected bytes_param."
        );
        assert_eq!(err("other", ParameterChoice::BoolParam(true)), "unrecognized load parameter 'other'.");
        let unload = HashMap::from([("unload_dependents".to_string(), p(ParameterChoice::Int64Param(1)))]);
        assert!(check_unload_params(&unload).is_err());
        assert_eq!(check_repository_name("r").unwrap_err().code, nereid_core::Code::Unsupported);
    }

    #[test]
    fn index_rows_leave_unknowns_empty() {
        let row = index_row(IndexEntry {
            name: "m".into(),
            version: Some(1),
            state: Some(ModelState::Ready),
            reason: String::new(),
        });
        assert_eq!((row.name.as_str(), row.version.as_str(), row.state.as_str()), ("m", "1", "READY"));
        let row =
            index_row(IndexEntry { name: "n".into(), version: None, state: None, reason: String::new() });
        assert_eq!((row.version.as_str(), row.state.as_str()), ("", ""));
    }
}
