//! K2's Prometheus configuration, checked by a real `promtool` (Debian's, unpacked by
//! scripts/bootstrap): the scrape config and alert rules are valid, and every alert's unit
//! tests pass (config/prometheus/alerts_test.yml: each fires when it should and stays
//! quiet when it should not).

use std::path::PathBuf;
use std::process::Command;

use k2_tests::{repo_root, stderr, stdout};

fn promtool() -> PathBuf {
    let path = repo_root().join(".k2/prometheus/usr/bin/promtool");
    assert!(
        path.exists(),
        "{} not found: run scripts/bootstrap (it unpacks Debian's prometheus package)",
        path.display()
    );
    path
}

fn check(args: &[&str]) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(repo_root().join("config/prometheus"))
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn the_scrape_config_and_the_rules_are_valid() {
    check(&["check", "config", "prometheus.yml"]);
    check(&["check", "config", "compose.yml"]);
    check(&["check", "rules", "alerts.yml"]);
}

#[test]
fn every_alert_fires_when_it_should_and_only_then() {
    check(&["test", "rules", "alerts_test.yml"]);
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(repo_root().join("config/prometheus/alerts.yml")).unwrap();
    let tests =
        std::fs::read_to_string(repo_root().join("config/prometheus/alerts_test.yml")).unwrap();
    for name in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "alerts_test.yml has no test for {name}"
        );
    }
}
