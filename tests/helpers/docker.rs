//! K2's image on this machine's Docker engine: built once per test binary by
//! `scripts/image` from the binaries this test run built (which starts dockerd when it is
//! installed and not running, and fails loudly when no engine can be had), and containers
//! that are removed when dropped. The containers share the host's network: the native
//! services of `scripts/services` listen on 127.0.0.1 only.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{bin, repo_root, stderr, stdout};

/// The image the tests run (`K2_IMAGE`, default `k2:dev`), built by `scripts/image` from
/// this profile's binaries the first time a test asks.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let binaries = bin("k2-sink").parent().unwrap().to_path_buf();
        for program in ["k2-query", "k2-admin", "k2-feed"] {
            bin(program);
        }
        let out = Command::new(repo_root().join("scripts/image"))
            .arg("--binaries")
            .arg(&binaries)
            .output()
            .expect("run scripts/image");
        crate::succeeded(&out, "scripts/image");
        std::env::var("K2_IMAGE").unwrap_or_else(|_| "k2:dev".into())
    })
}

/// `docker ARGS`, to completion.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
}

/// `docker ARGS`, which must succeed; its standard output, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    crate::succeeded(&docker(args), &format!("docker {args:?}"))
        .trim()
        .to_string()
}

/// `docker run` arguments for these `K2_*` variables and volumes, on the host's network.
pub fn run_args(vars: &[(String, String)], volumes: &[String]) -> Vec<String> {
    let mut args = vec!["--network".to_string(), "host".to_string()];
    for (k, v) in vars {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    }
    for v in volumes {
        args.push("-v".into());
        args.push(v.clone());
    }
    args
}

/// A one-off command in a fresh container of the image (removed afterwards).
pub fn run(vars: &[(String, String)], volumes: &[String], command: &[&str]) -> Output {
    let mut args = vec!["run".to_string(), "--rm".to_string()];
    args.extend(run_args(vars, volumes));
    args.push(image().to_string());
    args.extend(command.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&args)
}

/// A named container or volume, removed (with its anonymous volumes) when dropped.
pub struct Removed {
    kind: &'static str,
    pub name: String,
}

impl Removed {
    pub fn container(name: &str) -> Self {
        Removed {
            kind: "container",
            name: name.to_string(),
        }
    }

    pub fn volume(name: &str) -> Self {
        docker_ok(&["volume", "create", name]);
        Removed {
            kind: "volume",
            name: name.to_string(),
        }
    }
}

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = match self.kind {
            "container" => docker(&["rm", "-f", "-v", &self.name]),
            _ => docker(&["volume", "rm", "-f", &self.name]),
        };
    }
}

/// A container's state as `docker inspect` formats it (`{{.State.Health.Status}}`, …).
pub fn inspect(container: &str, format: &str) -> String {
    docker_ok(&["inspect", "-f", format, container])
}

/// Waits until `{{.State.Health.Status}}` is `healthy`, failing with the container's log
/// if it is not within `timeout` or the container stops.
pub fn wait_healthy(container: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let health = inspect(container, "{{.State.Health.Status}}");
        if health == "healthy" {
            return;
        }
        let running = inspect(container, "{{.State.Running}}") == "true";
        assert!(
            running && Instant::now() < deadline,
            "{container} is {health} (running: {running}):\n{}",
            logs(container)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A container's output so far.
pub fn logs(container: &str) -> String {
    let out = docker(&["logs", container]);
    format!("{}{}", stdout(&out), stderr(&out))
}

/// The shipped topics file of `env` as the image sees it: calendars under the image's
/// config directory. Written beside `env`'s own, readable by the image's user.
pub fn image_topics_file(topics: &Path) -> std::path::PathBuf {
    let host_calendars = format!("{}/config/calendars/", repo_root().display());
    let text = std::fs::read_to_string(topics)
        .unwrap()
        .replace(&host_calendars, "/opt/k2/config/calendars/");
    let path = topics.with_file_name("topics-image.yaml");
    std::fs::write(&path, text).unwrap();
    path
}
