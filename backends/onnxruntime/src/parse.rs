//! Triton's parsing of string-valued settings (backend_common.cc `ParseBoolValue`,
//! `ParseIntValue`), with its error texts, so configs accepted by Triton are accepted here.

use nereid_proto::inference::ModelConfig;

/// A model config `parameters` entry's string value.
pub(crate) fn model_parameter<'c>(config: &'c ModelConfig, key: &str) -> Option<&'c str> {
    config.parameters.get(key).map(|p| p.string_value.as_str())
}

/// "true", "on", "1", "false", "off", "0", any case.
pub(crate) fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err(format!("failed to convert '{value}' to boolean")),
    }
}

/// Like `std::stoi`: leading spaces, a sign and digits; whatever follows the digits is ignored.
pub(crate) fn parse_int(value: &str) -> Result<i32, String> {
    integer_prefix(value)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("failed to convert '{value}' to integral number"))
}

/// Like `std::stoull`.
pub(crate) fn parse_u64(value: &str) -> Result<u64, String> {
    integer_prefix(value)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("failed to convert '{value}' to unsigned long long integral number"))
}

fn integer_prefix(value: &str) -> Option<&str> {
    let rest = value.trim_start();
    let sign = usize::from(rest.starts_with(['+', '-']));
    let digits = rest[sign..].find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len() - sign);
    (digits > 0).then(|| &rest[..sign + digits])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_as_triton_reads_them() {
        for yes in ["true", "ON", "1", "True"] {
            assert_eq!(parse_bool(yes), Ok(true));
        }
        for no in ["false", "Off", "0"] {
            assert_eq!(parse_bool(no), Ok(false));
        }
        assert_eq!(parse_bool("yes"), Err("failed to convert 'yes' to boolean".into()));
    }

    #[test]
    fn integers_as_stoi_reads_them() {
        assert_eq!(parse_int("4"), Ok(4));
        assert_eq!(parse_int("  -2"), Ok(-2));
        assert_eq!(parse_int("8 threads"), Ok(8));
        assert_eq!(parse_int("x"), Err("failed to convert 'x' to integral number".into()));
        assert!(parse_int("-").is_err());
        assert!(parse_int("99999999999").is_err());
        assert_eq!(parse_u64("99999999999"), Ok(99_999_999_999));
        assert!(parse_u64("-1").unwrap_err().contains("unsigned long long"));
    }
}
