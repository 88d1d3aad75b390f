//! tritonserver's command line: the same flag names, meanings and defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{ArgAction, Parser};
use nereid_core::logging::LogFormat;
use nereid_core::model_repository_manager::ControlMode;

/// Triton's boolean option values.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err(format!("invalid value '{s}': expected true or false")),
    }
}

fn parse_control_mode(s: &str) -> Result<ControlMode, String> {
    match s {
        "none" => Ok(ControlMode::None),
        "poll" => Ok(ControlMode::Poll),
        "explicit" => Ok(ControlMode::Explicit),
        _ => Err(format!("invalid value '{s}': expected none, poll or explicit")),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    LogFormat::parse(s).ok_or_else(|| format!("invalid value '{s}': expected default or ISO8601"))
}

/// `<backend>,<setting>=<value>`, or `<setting>=<value>` for every backend.
fn parse_backend_config(s: &str) -> Result<(String, String, String), String> {
    let err = || format!("--backend-config option format is '<backend name>,<setting>=<value>', got '{s}'");
    let (backend, setting) = s.split_once(',').unwrap_or(("", s));
    let (key, value) = setting.split_once('=').ok_or_else(err)?;
    if key.is_empty() || (s.contains(',') && backend.is_empty()) {
        return Err(err());
    }
    Ok((backend.to_string(), key.to_string(), value.to_string()))
}

#[derive(Parser, Debug)]
#[command(
    name = "nereid",
    version,
    about = "A Triton-compatible inference server for macOS and Linux",
    args_override_self = true
)]
pub struct Cli {
    /// Path to a model repository; repeat for several.
    #[arg(long = "model-repository", alias = "model-store")]
    pub model_repository: Vec<PathBuf>,
    #[arg(long, default_value_t = 8000)]
    pub http_port: u16,
    #[arg(long, default_value_t = 8001)]
    pub grpc_port: u16,
    #[arg(long, default_value_t = 8002)]
    pub metrics_port: u16,
    #[arg(long, default_value = "0.0.0.0")]
    pub http_address: String,
    #[arg(long, default_value = "0.0.0.0")]
    pub grpc_address: String,
    #[arg(long, default_value = "0.0.0.0")]
    pub metrics_address: String,
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, default_value = "true")]
    pub allow_http: bool,
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, default_value = "true")]
    pub allow_grpc: bool,
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, default_value = "true")]
    pub allow_metrics: bool,
    #[arg(long, value_parser = parse_control_mode, default_value = "none")]
    pub model_control_mode: ControlMode,
    #[arg(long, default_value_t = 15)]
    pub repository_poll_secs: u64,
    /// Model to load at start in explicit mode; `*` loads all.
    #[arg(long)]
    pub load_model: Vec<String>,
    /// Use `<model>/configs/<name>.pbtxt` where it exists.
    #[arg(long)]
    pub model_config_name: Option<String>,
    #[arg(long)]
    pub disable_auto_complete_config: bool,
    /// Deprecated form of --disable-auto-complete-config.
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set)]
    pub strict_model_config: Option<bool>,
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, default_value = "true")]
    pub strict_readiness: bool,
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, default_value = "true")]
    pub exit_on_error: bool,
    #[arg(long, default_value_t = 30)]
    pub exit_timeout_secs: u64,
    #[arg(long, default_value = "triton")]
    pub id: String,
    #[arg(long, value_parser = parse_backend_config)]
    pub backend_config: Vec<(String, String, String)>,
    #[arg(long, default_value_t = 0)]
    pub log_verbose: u32,
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, default_value = "true")]
    pub log_info: bool,
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, default_value = "true")]
    pub log_warning: bool,
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, default_value = "true")]
    pub log_error: bool,
    #[arg(long)]
    pub log_file: Option<String>,
    #[arg(long, value_parser = parse_log_format, default_value = "default")]
    pub log_format: LogFormat,
    /// Let clients register system and CUDA shared memory regions (off by default, as in Triton).
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, default_value = "false")]
    pub allow_client_shm: bool,
}

impl Cli {
    pub fn auto_complete(&self) -> bool {
        !self.disable_auto_complete_config && !self.strict_model_config.unwrap_or(false)
    }

    pub fn backend_config_map(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut map: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (backend, key, value) in &self.backend_config {
            map.entry(backend.clone()).or_default().insert(key.clone(), value.clone());
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_flag_forms_and_defaults() {
        let cli = Cli::try_parse_from([
            "nereid",
            "--model-repository=/a",
            "--model-repository",
            "/b",
            "--http-port",
            "9000",
            "--allow-grpc=false",
        ])
        .unwrap();
        assert_eq!(cli.model_repository, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!((cli.http_port, cli.grpc_port, cli.metrics_port), (9000, 8001, 8002));
        assert!(!cli.allow_grpc && cli.allow_http && cli.strict_readiness && cli.exit_on_error);
        assert_eq!(cli.id, "triton");
        assert!(cli.auto_complete() && !cli.allow_client_shm);
        let cli = Cli::try_parse_from(["nereid", "--model-repository=/a", "--allow-client-shm=true"]).unwrap();
        assert!(cli.allow_client_shm);
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Cli::try_parse_from(["nereid", "--model-repository=/a", "--http-port=abc"]).is_err());
        assert!(Cli::try_parse_from(["nereid", "--model-repository=/a", "--allow-http=maybe"]).is_err());
        assert!(Cli::try_parse_from(["nereid", "--model-repository=/a", "--model-control-mode=sometimes"])
            .is_err());
        assert!(Cli::try_parse_from(["nereid", "--model-repository=/a", "--no-such-flag"]).is_err());
        assert!(Cli::try_parse_from(["nereid", "--model-repository=/a", "--backend-config=novalue"]).is_err());
    }

    #[test]
    fn backend_config_and_auto_complete() {
        let cli = Cli::try_parse_from([
            "nereid",
            "--model-repository=/a",
            "--backend-config=onnxruntime,default-max-batch-size=8",
            "--backend-config=some-global=1",
            "--strict-model-config=true",
        ])
        .unwrap();
        assert_eq!(cli.backend_config_map()["onnxruntime"]["default-max-batch-size"], "8");
        assert_eq!(cli.backend_config_map()[""]["some-global"], "1");
        assert!(!cli.auto_complete());
    }
}
