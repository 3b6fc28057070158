//! docker-compose.yml and the Dockerfiles, checked without a container engine: a real
//! Compose implementation (Debian's docker-compose, installed by scripts/bootstrap) parses
//! and resolves the file, then the resolved model is checked for what Compose does not
//! check — files that exist, declared volumes, clashing ports, pinned images, health checks
//! that can run in their image, and K2 settings that K2's own config loader accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use k2_tests::{ENV_LOCK, repo_root};
use serde_yaml_ng::Value;

/// The file as Compose resolves it (anchors merged, variables interpolated with their
/// defaults, paths absolute), every profile included.
fn resolved() -> Value {
    resolved_with(&[])
}

/// [`resolved`] with these override files on top.
fn resolved_with(overrides: &[&str]) -> Value {
    let mut files = vec!["-f", "docker-compose.yml"];
    for o in overrides {
        files.extend(["-f", o]);
    }
    let out = Command::new("docker-compose")
        .current_dir(repo_root())
        .args(["--profile", "demo", "--profile", "tools"])
        .args(files)
        .arg("config")
        // Defaults only: a developer's .env or shell must not change what is checked.
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .output()
        .expect("docker-compose (Debian's docker-compose package; scripts/bootstrap installs it)");
    assert!(
        out.status.success(),
        "docker-compose config rejects docker-compose.yml:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::from_slice(&out.stdout).expect("compose prints YAML")
}

fn services(model: &Value) -> Vec<(String, Value)> {
    model["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other).unwrap().trim().to_string(),
            })
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

#[test]
fn compose_resolves_and_its_services_fit_together() {
    let model = resolved();
    let services = services(&model);
    let names: BTreeSet<_> = services.iter().map(|(n, _)| n.clone()).collect();
    for expected in [
        "kafka",
        "schema-registry",
        "postgres",
        "minio",
        "minio-init",
        "iceberg-rest",
        "k2-init",
        "k2-sink",
        "k2-maintain",
        "k2-feed",
        "k2-query",
        "prometheus",
        "grafana",
        "kafka-ui",
    ] {
        assert!(names.contains(expected), "no service {expected}");
    }
    let declared: BTreeSet<String> = model["volumes"]
        .as_mapping()
        .map(|m| m.keys().map(|k| k.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    let mut host_ports = BTreeMap::new();
    for (name, s) in &services {
        // Images are pinned (or built from this repository, tagged).
        let image = s["image"].as_str().unwrap_or_default();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "{name}: image {image:?} is not pinned to a version"
        );
        if let Some(context) = s["build"]["context"].as_str() {
            let dockerfile = s["build"]["dockerfile"].as_str().unwrap_or("Dockerfile");
            assert!(
                Path::new(context).join(dockerfile).exists(),
                "{name}: no {dockerfile} in {context}"
            );
        }
        // Bind mounts point at files of the repository; named volumes are declared.
        for v in s["volumes"].as_sequence().into_iter().flatten() {
            let (kind, source) = match v {
                Value::String(short) => {
                    let source = short.split(':').next().unwrap().to_string();
                    let kind = if source.starts_with('/') || source.starts_with('.') {
                        "bind"
                    } else {
                        "volume"
                    };
                    (kind.to_string(), source)
                }
                long => (
                    long["type"].as_str().unwrap_or("volume").to_string(),
                    long["source"].as_str().unwrap_or_default().to_string(),
                ),
            };
            if kind == "bind" {
                assert!(
                    Path::new(&source).exists(),
                    "{name}: mounts missing {source}"
                );
            } else {
                assert!(
                    declared.contains(&source),
                    "{name}: volume {source} is not declared"
                );
            }
        }
        // Published ports: on 127.0.0.1 only, none twice.
        for p in s["ports"].as_sequence().into_iter().flatten() {
            let (ip, published) = match p {
                Value::String(short) => {
                    let parts: Vec<_> = short.split(':').collect();
                    assert_eq!(
                        parts.len(),
                        3,
                        "{name}: port {short} without a host address"
                    );
                    (parts[0].to_string(), parts[1].to_string())
                }
                long => (
                    long["host_ip"].as_str().unwrap_or("0.0.0.0").to_string(),
                    serde_yaml_ng::to_string(&long["published"])
                        .unwrap()
                        .trim()
                        .trim_matches('\'')
                        .trim_matches('"')
                        .to_string(),
                ),
            };
            assert_eq!(
                ip, "127.0.0.1",
                "{name}: port {published} published beyond this host"
            );
            if let Some(other) = host_ports.insert(published.clone(), name.clone()) {
                panic!("host port {published} published by {other} and {name}");
            }
        }
        // Dependencies exist, and those waited on for health have a health check.
        for (dep, cond) in s["depends_on"].as_mapping().into_iter().flatten() {
            let dep = dep.as_str().unwrap();
            let target = &services
                .iter()
                .find(|(n, _)| n == dep)
                .unwrap_or_else(|| panic!("{name} depends on {dep}, which is not a service"))
                .1;
            if cond["condition"] == "service_healthy" {
                assert!(
                    enabled(&target["healthcheck"]),
                    "{name} waits for {dep} to be healthy, and {dep} has no health check"
                );
            }
        }
        check_healthcheck(name, image, &s["healthcheck"]);
    }
}

/// What each image family has to run a health check with (from the images' own docs and
/// Dockerfiles; the k2 image's is checked against our Dockerfile below).
const HEALTH_TOOLS: [(&str, &[&str]); 9] = [
    (
        "apache/kafka:",
        &["/opt/kafka/bin/kafka-broker-api-versions.sh"],
    ),
    ("apicurio/apicurio-registry:", &["curl"]),
    ("postgres:", &["pg_isready"]),
    ("minio/minio:", &["mc"]),
    ("k2-iceberg-rest:", &["bash"]),
    ("k2:", &["curl"]),
    ("prom/prometheus:", &["wget"]),
    ("grafana/grafana:", &["wget"]),
    ("kafbat/kafka-ui:", &["wget"]),
];

/// Whether a (resolved) health check is there and enabled; Compose writes `disable: true`
/// as the test `["NONE"]`.
fn enabled(hc: &Value) -> bool {
    !hc.is_null()
        && hc["disable"] != true
        && strings(&hc["test"]).first().is_none_or(|t| t != "NONE")
}

fn check_healthcheck(name: &str, image: &str, hc: &Value) {
    if !enabled(hc) {
        return;
    }
    let test = strings(&hc["test"]);
    let program = match test.first().map(String::as_str) {
        Some("CMD") => test[1].clone(),
        Some("CMD-SHELL") => test[1].split_whitespace().next().unwrap().to_string(),
        other => panic!("{name}: health check test {other:?}"),
    };
    let tools = HEALTH_TOOLS
        .iter()
        .find(|(prefix, _)| image.starts_with(prefix))
        .unwrap_or_else(|| panic!("{name}: no known tools for image {image}"))
        .1;
    assert!(
        tools.contains(&program.as_str()),
        "{name}: health check runs {program}, which {image} does not have ({tools:?})"
    );
}

#[test]
fn the_dockerfiles_copy_what_exists_and_install_what_health_checks_use() {
    let root = repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    for line in dockerfile.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("COPY ") else {
            continue;
        };
        let words: Vec<_> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        if rest.contains("--from=") {
            continue;
        }
        for source in &words[..words.len() - 1] {
            assert!(
                root.join(source).exists(),
                "Dockerfile copies missing {source}"
            );
        }
    }
    // The runtime stage installs curl for its HEALTHCHECK (and compose's checks).
    let runtime = runtime_stage(&dockerfile);
    assert!(runtime.contains("curl") && runtime.contains("HEALTHCHECK"));
    // .dockerignore keeps the build output and local state out, and nothing the build needs.
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    for needed in ["config", "schemas", "Cargo.lock", "common", "sink"] {
        assert!(
            !ignore.lines().any(|l| l.trim_end_matches('/') == needed),
            ".dockerignore excludes {needed}"
        );
    }
    for excluded in ["target/", ".k2/"] {
        assert!(
            ignore.lines().any(|l| l == excluded),
            ".dockerignore lets {excluded} in"
        );
    }
}

/// The `ENV` of the Dockerfile's runtime stage (`runtime-base`): what every K2 container
/// starts with.
fn image_env() -> Vec<(String, String)> {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let stage = runtime_stage(&dockerfile);
    let joined = stage.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ENV "))
        .flat_map(|vars| {
            vars.split_whitespace()
                .map(|kv| kv.split_once('=').expect("ENV K=V"))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The text of the Dockerfile's `runtime-base` stage, which both final stages start from.
fn runtime_stage(dockerfile: &str) -> &str {
    dockerfile
        .split("\nFROM ")
        .find(|stage| {
            stage
                .lines()
                .next()
                .is_some_and(|l| l.ends_with(" AS runtime-base"))
        })
        .expect("the Dockerfile has a runtime-base stage")
}

#[test]
fn every_k2_service_environment_is_accepted_by_k2s_config_loader() {
    check_k2_environments(&[], "kafka:9092");
    // The same services on scripts/services' native servers (tests/image.rs runs them).
    check_k2_environments(&["docker/compose.native.yml"], "127.0.0.1:9092");
}

fn check_k2_environments(overrides: &[&str], bootstrap: &str) {
    let model = resolved_with(overrides);
    let k2: Vec<_> = services(&model)
        .into_iter()
        .filter(|(_, s)| s["image"].as_str().is_some_and(|i| i.starts_with("k2:")))
        .collect();
    assert!(k2.len() >= 5, "k2 services: {}", k2.len());
    let config = repo_root().join("config/k2.toml");
    let _guard = ENV_LOCK.lock().unwrap();
    for (name, s) in k2 {
        let env: BTreeMap<String, String> = s["environment"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{name}: no environment"))
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other).unwrap().trim().to_string(),
                };
                (k.as_str().unwrap().to_string(), v)
            })
            .collect();
        for key in env.keys().filter(|k| k.starts_with("K2_")) {
            assert!(
                k2_common::config::is_config_override(key),
                "{name}: {key} overrides no configuration key (misspelt section?)"
            );
        }
        // The image's own ENV (Dockerfile) plus the service's, and nothing from this
        // process.
        let saved: Vec<_> = std::env::vars()
            .filter(|(k, _)| k.starts_with("K2_"))
            .collect();
        for (k, _) in &saved {
            unsafe { std::env::remove_var(k) };
        }
        let image_env = image_env();
        assert!(
            image_env.iter().any(|(k, _)| k == "K2_STATE_DIR"),
            "{image_env:?}"
        );
        for (k, v) in &image_env {
            unsafe { std::env::set_var(k, v) };
        }
        for (k, v) in &env {
            unsafe { std::env::set_var(k, v) };
        }
        let loaded = k2_common::config::K2Config::load(&config);
        let set: Vec<String> = image_env
            .iter()
            .map(|(k, _)| k.to_string())
            .chain(env.keys().cloned())
            .collect();
        for k in set {
            unsafe { std::env::remove_var(k) };
        }
        for (k, v) in saved {
            unsafe { std::env::set_var(k, v) };
        }
        let loaded = loaded.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.kafka.bootstrap_servers, bootstrap, "{name}");
        assert!(
            matches!(
                loaded.catalog,
                k2_common::config::CatalogConfig::Rest { .. }
            ),
            "{name}: the REST catalog"
        );
        assert!(loaded.warehouse.location.starts_with("s3://"), "{name}");
    }
}
