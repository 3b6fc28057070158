//! Private instances of the local services, for tests that stop, kill or reconfigure a
//! server mid-ingest (which would disturb every other test on the shared one). Each runs
//! from a services directory of its own, on free ports of its own, started, stopped and
//! restarted through `scripts/services` as an operator would, and stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::repo_root;

/// The SCRAM password of user `k2` on [`Service::kafka_sasl_ssl`]'s broker.
pub const SCRAM_PASSWORD: &str = "k2-scram-secret";

pub struct Service {
    name: &'static str,
    dir: PathBuf,
    vars: Vec<(String, String)>,
}

impl Service {
    /// Starts service `name` with its data under `dir` and these `K2_*` variables (ports,
    /// configuration files).
    pub fn start(name: &'static str, dir: &Path, vars: &[(&str, String)]) -> Self {
        let service = Service {
            name,
            dir: dir.to_path_buf(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        service.up();
        service
    }

    /// A private broker (KRaft, one node) on a free port pair; its bootstrap address.
    pub fn kafka(dir: &Path) -> (Self, String) {
        let port = free_port(&[0, 1]);
        let s = Self::start("kafka", dir, &[("K2_KAFKA_PORT", port.to_string())]);
        (s, format!("127.0.0.1:{port}"))
    }

    /// A private broker that also listens with SASL_SSL (SCRAM-SHA-512 over TLS, user `k2`,
    /// password [`SCRAM_PASSWORD`]): its secured bootstrap address and the CA certificate
    /// that signed the broker's.
    pub fn kafka_sasl_ssl(dir: &Path) -> (Self, String, PathBuf) {
        let port = free_port(&[0, 1, 2]);
        let s = Self::start(
            "kafka",
            dir,
            &[
                ("K2_KAFKA_PORT", port.to_string()),
                ("K2_KAFKA_SASL_SSL_PORT", (port + 2).to_string()),
                ("K2_KAFKA_SCRAM_PASSWORD", SCRAM_PASSWORD.to_string()),
            ],
        );
        (
            s,
            format!("127.0.0.1:{}", port + 2),
            dir.join("kafka/tls/ca.pem"),
        )
    }

    /// A private SeaweedFS (S3 and the Iceberg REST catalog): its S3 and REST ports.
    pub fn s3(dir: &Path) -> (Self, u16, u16) {
        // S3 on p, master/volume/filer/admin on p+1..p+4, each with gRPC at +10000.
        let ports: Vec<u16> = (0..5).flat_map(|i| [i, i + 10_000]).collect();
        let s3 = free_port(&ports);
        let rest = free_port(&[0, 10_000]);
        let s = Self::start(
            "s3",
            dir,
            &[
                ("K2_S3_PORT", s3.to_string()),
                ("K2_ICEBERG_REST_PORT", rest.to_string()),
            ],
        );
        (s, s3, rest)
    }

    /// A private PostgreSQL; its port.
    pub fn postgres(dir: &Path) -> (Self, u16) {
        let port = free_port(&[0]);
        let s = Self::start("postgres", dir, &[("K2_POSTGRES_PORT", port.to_string())]);
        (s, port)
    }

    pub fn up(&self) {
        self.script(&["up", self.name]);
    }

    pub fn down(&self) {
        self.script(&["down", self.name]);
    }

    /// SIGKILL to the server process (then `up` restarts it).
    pub fn kill9(&self) {
        let pid_file = match self.name {
            "postgres" => self.dir.join("postgres/data/postmaster.pid"),
            other => self.dir.join(other).join("pid"),
        };
        let text = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        let pid = text.lines().next().unwrap().trim();
        let ok = Command::new("kill")
            .args(["-9", pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -9 {pid} ({})", self.name);
    }

    fn script(&self, args: &[&str]) {
        let out = Command::new(repo_root().join("scripts/services"))
            .args(args)
            .env("K2_SERVICES_DIR", &self.dir)
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run scripts/services");
        assert!(
            out.status.success(),
            "scripts/services {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/services"))
            .args(["down", self.name])
            .env("K2_SERVICES_DIR", &self.dir)
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .output();
    }
}

/// A port `p` on 127.0.0.1 such that `p + offset` is free for every offset given.
pub fn free_port(offsets: &[u16]) -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let p: u16 = rng.random_range(30_000..50_000);
        if offsets
            .iter()
            .all(|o| std::net::TcpListener::bind(("127.0.0.1", p + o)).is_ok())
        {
            return p;
        }
    }
    panic!("no free port block for offsets {offsets:?}");
}

/// Prometheus (scripts/services) scraping targets of a test, with K2's alert rules.
pub struct Prometheus {
    pub address: String,
    _service: Service,
}

impl Prometheus {
    /// Starts Prometheus under `dir` scraping `targets` (host:port) as job `k2-sink` every
    /// second, evaluating the shipped alert rules every second.
    pub fn scraping(dir: &Path, targets: &[&str]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("prometheus.yml");
        let rules = repo_root().join("config/prometheus/alerts.yml");
        let list = targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: k2-sink\n    static_configs:\n      - targets: [{list}]\n",
                rules.display()
            ),
        )
        .unwrap();
        let port = free_port(&[0]);
        let service = Service::start(
            "prometheus",
            dir,
            &[
                ("K2_PROMETHEUS_PORT", port.to_string()),
                ("K2_PROMETHEUS_CONFIG", config.display().to_string()),
            ],
        );
        Prometheus {
            address: format!("127.0.0.1:{port}"),
            _service: service,
        }
    }

    /// An instant query through the HTTP API: the `data.result` array (panics on an error
    /// status, with Prometheus's message).
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let path = format!(
            "/api/v1/query?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("query", expr)
                .finish()
        );
        let (code, body) = crate::sink::http_get(&self.address, &path)
            .unwrap_or_else(|| panic!("prometheus at {} unreachable", self.address));
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{expr}: {e}: {body}"));
        assert!(
            code == 200 && v["status"] == "success",
            "{expr}: HTTP {code}: {body}"
        );
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The query's single value (summed over the series it returns; `None` if none).
    pub fn value(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr);
        if r.is_empty() {
            return None;
        }
        Some(
            r.iter()
                .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
                .sum(),
        )
    }

    /// Polls `expr` until its value satisfies `ok`, panicking after `timeout`.
    pub fn wait_for(&self, expr: &str, timeout: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let v = self.value(expr);
            if let Some(v) = v.filter(|v| ok(*v)) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{expr} = {v:?} after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Runs one `weed shell` command against the SeaweedFS whose S3 port is `s3_port` (its
/// master listens on the next port); its output.
pub fn weed_shell(s3_port: u16, command: &str) -> String {
    use std::io::Write;
    let cache = std::env::var_os("K2_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/k2"));
    let weed = cache.join("venv/bin/weed");
    let mut child = Command::new(&weed)
        .args(["shell", &format!("-master=127.0.0.1:{}", s3_port + 1)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/services up s3 installs it)",
                weed.display()
            )
        });
    writeln!(child.stdin.take().unwrap(), "{command}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "weed shell {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
