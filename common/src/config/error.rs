use std::path::PathBuf;

/// A configuration problem, always located: which file, which key, what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the file", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed or a value has the wrong type.
    #[error("{}: {key}: {message}", file.display())]
    Parse {
        file: PathBuf,
        key: String,
        message: String,
    },
    /// Well-formed, but a value breaks a rule.
    #[error("{}: {key}: expected {expected}, found {found}", file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        expected: String,
        found: String,
    },
}

impl ConfigError {
    pub fn invalid(
        file: impl Into<PathBuf>,
        key: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            file: file.into(),
            key: key.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// Reads a configuration file, locating any I/O error at the file.
    pub(crate) fn read_file(path: &std::path::Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })
    }

    /// The key path the error is about (`(root)` for whole-file problems).
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Read { .. } => "(root)",
            ConfigError::Parse { key, .. } | ConfigError::Invalid { key, .. } => key,
        }
    }
}
