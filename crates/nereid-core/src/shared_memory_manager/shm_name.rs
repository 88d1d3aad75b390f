//! Which POSIX shared memory object a client's key names, on each platform.
//!
//! Triton's Python client creates regions through `multiprocessing.shared_memory`, which puts a
//! `/` in front of the key on POSIX systems: key `/input_simple` becomes the object
//! `//input_simple`. glibc drops every leading `/` when it resolves a name, so on Linux the key,
//! Python's form and the portable form (`/` + the key without its leading slashes) are one
//! object. macOS keeps names verbatim, so they are three different objects there, and a name is
//! at most 31 characters (PSHMNAMLEN). Portable names start with exactly one `/` and have no
//! other; a key that breaks that rule may still name what the client created, so each candidate
//! is tried in turn and the system decides.

use super::Platform;

/// macOS's PSHMNAMLEN: the longest name `shm_open` takes there.
pub const MACOS_NAME_MAX: usize = 31;

/// The portable form of a key: exactly one leading `/`.
pub fn portable_name(key: &str) -> String {
    format!("/{}", key.trim_start_matches('/'))
}

/// The object names to try for a client's key, in order: the key itself, then the object Python
/// would have created for it, then the portable form. Names macOS cannot hold are left out.
pub fn candidates(key: &str, platform: Platform) -> Vec<String> {
    match platform {
        // glibc resolves all three forms to the same object.
        Platform::Linux => vec![key.to_string()],
        Platform::MacOs => {
            let mut names: Vec<String> = Vec::new();
            for name in [key.to_string(), format!("/{key}"), portable_name(key)] {
                if name.len() <= MACOS_NAME_MAX && !names.contains(&name) {
                    names.push(name);
                }
            }
            names
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_opens_the_key_as_given() {
        assert_eq!(candidates("/input_simple", Platform::Linux), ["/input_simple"]);
        assert_eq!(candidates("input_simple", Platform::Linux), ["input_simple"]);
    }

    #[test]
    fn macos_tries_the_key_then_pythons_then_the_portable_form() {
        assert_eq!(candidates("/input_simple", Platform::MacOs), ["/input_simple", "//input_simple"]);
        assert_eq!(candidates("input_simple", Platform::MacOs), ["input_simple", "/input_simple"]);
        assert_eq!(candidates("//x", Platform::MacOs), ["//x", "///x", "/x"]);
    }

    #[test]
    fn macos_leaves_out_names_over_31_characters() {
        let key = format!("/{}", "k".repeat(30));
        assert_eq!(key.len(), MACOS_NAME_MAX);
        assert_eq!(candidates(&key, Platform::MacOs), std::slice::from_ref(&key));
        let long = format!("/{}", "k".repeat(31));
        assert!(candidates(&long, Platform::MacOs).is_empty());
        assert_eq!(candidates(&long, Platform::Linux), [long]);
    }

    #[test]
    fn the_portable_form_has_exactly_one_leading_slash() {
        for key in ["a", "/a", "//a", "///input_simple"] {
            let name = portable_name(key);
            assert!(name.starts_with('/') && !name[1..].contains('/'), "{name}");
        }
        assert_eq!(portable_name("//a"), "/a");
    }
}
