//! conda-pack archives (`EXECUTION_ENV_PATH` ending in `.tar.gz`): unpacked once into a cache
//! folder named after the archive's path, and unpacked again only when the archive changes
//! (its size or modification time).

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use nereid_core::{Error, Result};
use parking_lot::Mutex;

const STAMP: &str = "nereid-unpacked";

/// The unpacked environment of `archive`, under `cache`.
pub fn unpack(archive: &Path, cache: &Path) -> Result<PathBuf> {
    // Models loading in parallel may share an archive: one unpacks, the others reuse.
    static UNPACKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = UNPACKING.lock();
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        Error::invalid_arg(format!("failed to {what} EXECUTION_ENV_PATH '{}': {e}", archive.display()))
    };
    let meta = fs::metadata(archive).map_err(|e| failed("read", &e))?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
    let stamp = format!("{} {}", meta.len(), modified.as_nanos());
    let canonical = archive.canonicalize().map_err(|e| failed("read", &e))?;
    let mut hasher = DefaultHasher::new();
    canonical.hash(&mut hasher);
    let folder = cache.join(format!("{:016x}", hasher.finish()));
    if fs::read_to_string(folder.join(STAMP)).is_ok_and(|s| s == stamp) {
        return Ok(folder.join("env"));
    }
    fs::create_dir_all(cache).map_err(|e| failed("create a cache folder for", &e))?;
    // Unpack beside the cache entry, then swap it in: a half-unpacked folder is never used.
    let staging = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(cache)
        .map_err(|e| failed("create a cache folder for", &e))?;
    let file = fs::File::open(archive).map_err(|e| failed("read", &e))?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(staging.path().join("env"))
        .map_err(|e| failed("unpack", &e))?;
    fs::write(staging.path().join(STAMP), &stamp).map_err(|e| failed("unpack", &e))?;
    let _ = fs::remove_dir_all(&folder);
    fs::rename(staging.keep(), &folder).map_err(|e| failed("unpack", &e))?;
    log::info!("unpacked EXECUTION_ENV_PATH '{}' into '{}'", archive.display(), folder.display());
    Ok(folder.join("env"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_archive(path: &Path, content: &str) {
        let file = fs::File::create(path).unwrap();
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder.append_data(&mut header, "bin/python3", content.as_bytes()).unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn unpacked_once_and_again_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("env.tar.gz");
        let cache = dir.path().join("cache");
        write_archive(&archive, "one");
        let env = unpack(&archive, &cache).unwrap();
        assert_eq!(fs::read_to_string(env.join("bin/python3")).unwrap(), "one");
        // Reused while unchanged: a file added to the unpacked folder stays.
        fs::write(env.join("marker"), "").unwrap();
        assert_eq!(unpack(&archive, &cache).unwrap(), env);
        assert!(env.join("marker").exists());
        write_archive(&archive, "second");
        let again = unpack(&archive, &cache).unwrap();
        assert_eq!(again, env);
        assert_eq!(fs::read_to_string(env.join("bin/python3")).unwrap(), "second");
        assert!(!env.join("marker").exists());
        assert!(unpack(&dir.path().join("missing.tar.gz"), &cache).is_err());
    }
}
