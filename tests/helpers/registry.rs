//! The real Confluent-API schema registry `scripts/services` runs (Apicurio Registry, its
//! `/apis/ccompat/v7` API), and the Python environment with the official confluent-kafka
//! client that produces reference records through it.

use std::path::PathBuf;
use std::process::Command;

use crate::{ensure_services, env_or};

/// The registry of the local services, on `127.0.0.1:$K2_REGISTRY_PORT` (default 8081).
pub struct Registry {
    pub url: String,
}

impl Registry {
    /// The local services' registry (started if it is not running).
    pub fn local() -> Self {
        ensure_services();
        let port = env_or("K2_REGISTRY_PORT", 8081u16);
        Registry {
            url: format!("http://127.0.0.1:{port}/apis/ccompat/v7"),
        }
    }

    /// GET a path under the Confluent-compatible API; the JSON body.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let url = format!("{}{path}", self.url);
        let out = Command::new("curl")
            .args(["-fsS", "--max-time", "10", &url])
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "GET {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }
}

/// Python with confluent-kafka, installed by `scripts/bootstrap` into the cache.
pub fn python() -> PathBuf {
    let cache = std::env::var_os("K2_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/k2"));
    let python = cache.join("venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import confluent_kafka.schema_registry.avro"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} with confluent-kafka is missing: run scripts/bootstrap",
        python.display()
    );
    python
}
