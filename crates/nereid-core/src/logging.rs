//! Triton-style logging behind the `log` facade, with settings that `/v2/logging` changes
//! while the server runs.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Triton's default: `I1124 03:30:01.123456 1234 file.rs:10] message`.
    Default,
    /// `2026-11-24T03:30:01Z I 1234 file.rs:10] message`.
    Iso8601,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "default" => Some(LogFormat::Default),
            "ISO8601" => Some(LogFormat::Iso8601),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Default => "default",
            LogFormat::Iso8601 => "ISO8601",
        }
    }
}

pub struct LogSettings {
    pub info: AtomicBool,
    pub warning: AtomicBool,
    pub error: AtomicBool,
    pub verbose_level: AtomicU32,
    format: Mutex<LogFormat>,
    file: Mutex<(String, Option<File>)>,
}

impl LogSettings {
    pub fn format(&self) -> LogFormat {
        *self.format.lock()
    }
    pub fn set_format(&self, f: LogFormat) {
        *self.format.lock() = f;
    }
    pub fn file_name(&self) -> String {
        self.file.lock().0.clone()
    }
    /// Sends the log to `path` (appending), or to standard error when empty.
    pub fn set_file(&self, path: &str) -> std::io::Result<()> {
        let file =
            if path.is_empty() { None } else { Some(File::options().create(true).append(true).open(path)?) };
        *self.file.lock() = (path.to_string(), file);
        Ok(())
    }
}

pub fn settings() -> &'static LogSettings {
    static SETTINGS: OnceLock<LogSettings> = OnceLock::new();
    SETTINGS.get_or_init(|| LogSettings {
        info: AtomicBool::new(true),
        warning: AtomicBool::new(true),
        error: AtomicBool::new(true),
        verbose_level: AtomicU32::new(0),
        format: Mutex::new(LogFormat::Default),
        file: Mutex::new((String::new(), None)),
    })
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        let s = settings();
        match m.level() {
            log::Level::Error => s.error.load(Relaxed),
            log::Level::Warn => s.warning.load(Relaxed),
            log::Level::Info => s.info.load(Relaxed),
            log::Level::Debug => s.verbose_level.load(Relaxed) >= 1,
            log::Level::Trace => s.verbose_level.load(Relaxed) >= 2,
        }
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(settings().format(), record, SystemTime::now());
        let mut file = settings().file.lock();
        match file.1.as_mut() {
            Some(f) => {
                let _ = f.write_all(line.as_bytes());
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

fn format_line(format: LogFormat, record: &log::Record, now: SystemTime) -> String {
    let level = match record.level() {
        log::Level::Error => 'E',
        log::Level::Warn => 'W',
        log::Level::Info => 'I',
        _ => 'V',
    };
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, micros) = (since.as_secs(), since.subsec_micros());
    let (y, mo, d, h, mi, s) = civil(secs);
    let file = record.file().map(|f| f.rsplit('/').next().unwrap_or(f)).unwrap_or("?");
    let line = record.line().unwrap_or(0);
    let pid = std::process::id();
    match format {
        LogFormat::Default => format!(
            "{level}{mo:02}{d:02} {h:02}:{mi:02}:{s:02}.{micros:06} {pid} {file}:{line}] {}\n",
            record.args()
        ),
        LogFormat::Iso8601 => format!(
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z {level} {pid} {file}:{line}] {}\n",
            record.args()
        ),
    }
}

/// UTC calendar fields of a Unix time (days-from-civil inverse, proleptic Gregorian).
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, (rem / 3600) as u32, (rem % 3600 / 60) as u32, (rem % 60) as u32)
}

/// Installs the logger (once per process).
pub fn init() {
    static LOGGER: Logger = Logger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(1_795_491_001), (2026, 11, 24, 3, 30, 1));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
    }

    #[test]
    fn line_formats() {
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_795_491_001_000_042);
        let args = format_args!("hello");
        let rec = log::Record::builder()
            .args(args)
            .level(log::Level::Info)
            .file(Some("a/b/server.rs"))
            .line(Some(7))
            .build();
        let pid = std::process::id();
        assert_eq!(
            format_line(LogFormat::Default, &rec, t),
            format!("I1124 03:30:01.000042 {pid} server.rs:7] hello\n")
        );
        assert_eq!(
            format_line(LogFormat::Iso8601, &rec, t),
            format!("2026-11-24T03:30:01Z I {pid} server.rs:7] hello\n")
        );
    }
}
