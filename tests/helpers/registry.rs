//! The Confluent-API schema registry kept under `tests/registry/` (no real one can be
//! installed from the package registries here; docker-compose.yml runs the real one), and
//! the Python environment with the official confluent-kafka client that produces
//! reference records through it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::repo_root;

pub struct Registry {
    child: Child,
    pub url: String,
    port: u16,
}

impl Registry {
    pub fn start() -> Self {
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/registry/confluent_api_registry.py"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the test registry");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("test registry did not start: {line:?}"));
        Registry {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
        }
    }

    /// GET a path; the JSON body.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or("null");
        serde_json::from_str(body).unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
