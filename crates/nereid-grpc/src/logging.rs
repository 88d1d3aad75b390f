//! The logging extension: reads and changes the core's log settings, with Triton's checks and
//! texts (`grpc_server.cc` RegisterLogging). Settings apply in Triton's order, each as it passes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use nereid_core::logging::{LogFormat, LogSettings};
use nereid_core::{Error, Result};
use nereid_proto::inference::log_settings_request::setting_value::ParameterChoice as In;
use nereid_proto::inference::log_settings_request::SettingValue as InValue;
use nereid_proto::inference::log_settings_response::setting_value::ParameterChoice as Out;
use nereid_proto::inference::log_settings_response::SettingValue as OutValue;

pub fn update(s: &LogSettings, request: &HashMap<String, InValue>) -> Result<()> {
    let get = |name: &str| request.get(name).map(|v| &v.parameter_choice);
    if get("log_file").is_some() {
        return Err(Error::unsupported("log file location can not be updated through network protocol"));
    }
    let flags: [(&str, &AtomicBool); 3] =
        [("log_info", &s.info), ("log_warning", &s.warning), ("log_error", &s.error)];
    for (name, flag) in flags {
        match get(name) {
            None => {}
            Some(Some(In::BoolParam(b))) => flag.store(*b, Relaxed),
            Some(_) => return Err(Error::invalid_arg(format!("expect boolean for '{name}'"))),
        }
    }
    match get("log_verbose_level") {
        None => {}
        Some(Some(In::Uint32Param(level))) => s.verbose_level.store(*level, Relaxed),
        Some(_) => return Err(Error::invalid_arg("expect int32 for 'log_verbose_level'")),
    }
    match get("log_format") {
        None => {}
        Some(Some(In::StringParam(f))) => match LogFormat::parse(f) {
            Some(format) => s.set_format(format),
            None => return Err(Error::invalid_arg(format!("invalid argument for log_format, got: {f}"))),
        },
        Some(_) => return Err(Error::invalid_arg("expect string for 'log_format'")),
    }
    Ok(())
}

pub fn current(s: &LogSettings) -> HashMap<String, OutValue> {
    let value = |choice| OutValue { parameter_choice: Some(choice) };
    HashMap::from([
        ("log_file".to_string(), value(Out::StringParam(s.file_name()))),
        ("log_info".to_string(), value(Out::BoolParam(s.info.load(Relaxed)))),
        ("log_warning".to_string(), value(Out::BoolParam(s.warning.load(Relaxed)))),
        ("log_error".to_string(), value(Out::BoolParam(s.error.load(Relaxed)))),
        ("log_verbose_level".to_string(), value(Out::Uint32Param(s.verbose_level.load(Relaxed)))),
        ("log_format".to_string(), value(Out::StringParam(s.format().as_str().to_string()))),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(name: &str, choice: In) -> HashMap<String, InValue> {
        HashMap::from([(name.to_string(), InValue { parameter_choice: Some(choice) })])
    }

    #[test]
    fn updates_show_in_the_settings() {
        // The only test in this crate that touches the process-wide settings.
        let s = nereid_core::logging::settings();
        update(s, &setting("log_verbose_level", In::Uint32Param(2))).unwrap();
        update(s, &setting("log_format", In::StringParam("ISO8601".into()))).unwrap();
        update(s, &setting("log_warning", In::BoolParam(false))).unwrap();
        let now = current(s);
        assert_eq!(now["log_verbose_level"].parameter_choice, Some(Out::Uint32Param(2)));
        assert_eq!(now["log_format"].parameter_choice, Some(Out::StringParam("ISO8601".into())));
        assert_eq!(now["log_warning"].parameter_choice, Some(Out::BoolParam(false)));
        assert_eq!(now.len(), 6);

        let err = |name: &str, choice| update(s, &setting(name, choice)).unwrap_err();
        assert_eq!(err("log_info", In::Uint32Param(1)).message, "expect boolean for 'log_info'");
        assert_eq!(
            err("log_verbose_level", In::BoolParam(true)).message,
            "expect int32 for 'log_verbose_level'"
        );
        assert_eq!(
            err("log_format", In::StringParam("json".into())).message,
            "invalid argument for log_format, got: json"
        );
        assert_eq!(err("log_file", In::StringParam("/tmp/x".into())).code, nereid_core::Code::Unsupported);
    }
}
