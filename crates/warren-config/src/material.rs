//! Keys, certificates and credentials: inline blocks or files.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;

/// The contents of `ca`, `cert`, `key`, `dh`, `tls-crypt`, `tls-auth` or
/// `auth-user-pass`: either an inline `<tag>` block or a file path.
///
/// `Debug` never prints inline contents (they are usually private keys).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Material {
    /// The body of an inline block, each line ending in `\n`.
    Inline(String),
    /// A file, already resolved (see [`resolve_path`]).
    File(PathBuf),
}

impl Material {
    /// The text: the inline body, or the file's contents.
    ///
    /// Errors name the path and the OS error. [`Material::load_for`] also
    /// names the directive.
    pub fn load(&self) -> Result<String, ConfigError> {
        self.load_inner(None)
    }

    /// Like [`Material::load`], with `directive` (for example `"ca"`) named in
    /// the error.
    pub fn load_for(&self, directive: &'static str) -> Result<String, ConfigError> {
        self.load_inner(Some(directive))
    }

    fn load_inner(&self, directive: Option<&'static str>) -> Result<String, ConfigError> {
        match self {
            Material::Inline(s) => Ok(s.clone()),
            Material::File(path) => {
                std::fs::read_to_string(path).map_err(|source| ConfigError::ReadMaterial {
                    directive,
                    path: path.clone(),
                    source,
                })
            }
        }
    }

    /// The file path, if this is a file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Material::Inline(_) => None,
            Material::File(p) => Some(p),
        }
    }
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Material::Inline(s) => write!(f, "Inline(<{} bytes>)", s.len()),
            Material::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// Resolves a path named in a config.
///
/// OpenVPN opens relative paths against the process's current directory (it
/// is normally started from the config's directory, or with `cd`). warren does
/// the same first and, if nothing exists there, tries the config file's
/// directory `base_dir`, so `warren server --config /etc/openvpn/server.conf`
/// works from anywhere. A path found in neither place is kept as written, so
/// the eventual "not found" error names it as the admin wrote it.
pub fn resolve_path(written: &str, base_dir: &Path) -> PathBuf {
    let p = Path::new(written);
    if p.is_absolute() || p.exists() {
        return p.to_path_buf();
    }
    let in_base = base_dir.join(p);
    if in_base.exists() {
        return in_base;
    }
    p.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_loads_and_debug_redacts() {
        let m = Material::Inline("-----BEGIN PRIVATE KEY-----\n".into());
        assert_eq!(m.load().expect("inline"), "-----BEGIN PRIVATE KEY-----\n");
        let dbg = format!("{m:?}");
        assert!(!dbg.contains("PRIVATE"), "{dbg}");
        assert!(m.path().is_none());
    }

    #[test]
    fn missing_file_error_names_directive_and_path() {
        let m = Material::File(PathBuf::from("/nonexistent/warren-test/ca.crt"));
        let e = m.load_for("ca").expect_err("missing");
        let s = e.to_string();
        assert!(s.contains("`ca` file"), "{s}");
        assert!(s.contains("/nonexistent/warren-test/ca.crt"), "{s}");
        assert!(s.contains("No such file"), "{s}");
        let s = m.load().expect_err("missing").to_string();
        assert!(s.starts_with("cannot read file /nonexistent"), "{s}");
    }

    #[test]
    fn resolves_against_config_dir_when_absent_from_cwd() {
        let dir = std::env::temp_dir().join(format!("warren-config-res-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let name = "warren-only-in-config-dir.key";
        std::fs::write(dir.join(name), "k").expect("write");
        assert_eq!(resolve_path(name, &dir), dir.join(name));
        // Not present anywhere: kept as written.
        assert_eq!(
            resolve_path("nope-warren.key", &dir),
            PathBuf::from("nope-warren.key")
        );
        // Absolute paths are never rewritten.
        assert_eq!(
            resolve_path("/abs/x.key", &dir),
            PathBuf::from("/abs/x.key")
        );
        let m = Material::File(resolve_path(name, &dir));
        assert_eq!(m.load().expect("reads"), "k");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
