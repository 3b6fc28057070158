//! K2's image run for real (issue: the image was only ever validated): built by
//! `scripts/image` on this machine's Docker engine, its programs run in containers against
//! the native services of `scripts/services` (Kafka, the schema registry, SeaweedFS's S3 and
//! Iceberg REST catalog), and docker-compose.yml's K2 services brought up by Debian's
//! docker-compose with `docker/compose.native.yml`, which points them at those services
//! instead of the third-party images no registry here can give.

use std::time::{Duration, Instant};

use k2_tests::docker::{
    Removed, docker_ok, image, image_topics_file, inspect, logs, run, run_args, wait_healthy,
};
use k2_tests::services::free_port;
use k2_tests::sink::scrape_counter;
use k2_tests::{
    BOOTSTRAP, S3_ACCESS_KEY, S3_SECRET_KEY, TestEnv, compose_k2_vars, create_table_bucket,
    ensure_services, env_or, fed_poison, repo_root, s3_port, small_poisoned_feed, stderr,
    succeeded, unique,
};

/// The `K2_*` settings of docker-compose.yml's `x-k2` block, pointed at the native services:
/// `env`'s topics (mounted at /etc/k2/topics.yaml), group and dead-letter topic, the schema
/// registry, and a table bucket of its own on SeaweedFS's REST catalog.
fn k2_vars(env: &TestEnv) -> Vec<(String, String)> {
    let bucket = unique("img");
    create_table_bucket(s3_port(), &bucket);
    let rest = format!(
        "http://127.0.0.1:{}",
        env_or("K2_ICEBERG_REST_PORT", 8181u16)
    );
    let credential = format!("{S3_ACCESS_KEY}:{S3_SECRET_KEY}");
    let mut vars = compose_k2_vars(&rest, &format!("s3://{bucket}"), Some(&credential));
    vars.extend(
        [
            ("K2_TOPICS_FILE", "/etc/k2/topics.yaml"),
            ("K2_KAFKA__BOOTSTRAP_SERVERS", BOOTSTRAP.as_str()),
            ("K2_KAFKA__GROUP_ID", env.group.as_str()),
            ("K2_SINK__DEAD_LETTER_TOPIC", env.dead_letter_topic.as_str()),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    vars
}

fn with(vars: &[(String, String)], more: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = vars.to_vec();
    all.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all
}

/// Runs a program of the image, which must succeed; its standard output.
fn run_ok(vars: &[(String, String)], volumes: &[String], command: &[&str]) -> String {
    succeeded(
        &run(vars, volumes, command),
        &format!("{command:?} in the image"),
    )
}

/// One CSV answer of `k2-query -c SQL`, from the image.
fn query_one(vars: &[(String, String)], volumes: &[String], sql: &str) -> String {
    let text = run_ok(vars, volumes, &["k2-query", "--format", "csv", "-c", sql]);
    text.lines().nth(1).unwrap_or_default().trim().to_string()
}

/// Every record of a table landed once: rows minus distinct (exchange, symbol, sequence).
const DOUBLED: &str = "select (select count(*) - count(distinct exchange || '/' || symbol || '/' || sequence_number) from trades) \
     + (select count(*) - count(distinct exchange || '/' || symbol || '/' || sequence_number) from quotes) as doubled";
const LANDED: &str = "select (select count(*) from trades) + (select count(*) from quotes) \
     + (select count(*) from reference_data) as n";

#[test]
fn the_image_runs_admin_sink_and_query_as_its_own_user_exactly_once() {
    ensure_services();
    let image = image();
    let env = TestEnv::new();
    env.set_partitions(2, 1);
    let topics = image_topics_file(&env.topics);
    let mounts = vec![format!("{}:/etc/k2/topics.yaml:ro", topics.display())];
    let vars = k2_vars(&env);

    run_ok(&vars, &mounts, &["k2-admin", "topics", "apply"]);
    run_ok(&vars, &mounts, &["k2-admin", "schemas", "register"]);

    // The sink as compose runs it (the image's CMD), committing only when stopped: what
    // the tables hold at the end, SIGTERM committed.
    let volume = Removed::volume(&unique("k2-state-"));
    let sink = Removed::container(&unique("k2-sink-"));
    let metrics = format!("127.0.0.1:{}", free_port(&[0]));
    let sink_vars = with(
        &vars,
        &[
            ("K2_METRICS__ADDRESS", metrics.as_str()),
            ("K2_SINK__COMMIT__INTERVAL", "1h"),
        ],
    );
    let mut sink_mounts = mounts.clone();
    sink_mounts.push(format!("{}:/var/lib/k2", volume.name));
    let mut args = vec![
        "run".to_string(),
        "-d".into(),
        "--name".into(),
        sink.name.clone(),
    ];
    args.extend(run_args(&sink_vars, &sink_mounts));
    args.push(image.to_string());
    docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_healthy(&sink.name, Duration::from_secs(120));
    // The process runs as the image's user, not root.
    let user = docker_ok(&["exec", &sink.name, "stat", "-c", "%U", "/proc/1"]);
    assert_eq!(user, "k2");

    let out = run(
        &vars,
        &mounts,
        &[
            "k2-feed",
            "synthetic",
            "--count",
            "6000",
            "--symbols",
            "5",
            "--poison-every",
            "1000",
        ],
    );
    assert!(out.status.success(), "k2-feed: {}", stderr(&out));
    let good = 6000 - fed_poison(&out);

    let deadline = Instant::now() + Duration::from_secs(120);
    while scrape_counter(&metrics, "k2_records_consumed_total") < 6000 {
        assert!(
            Instant::now() < deadline,
            "the sink consumed {} of 6000:\n{}",
            scrape_counter(&metrics, "k2_records_consumed_total"),
            logs(&sink.name)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        scrape_counter(&metrics, "k2_records_written_total"),
        0,
        "nothing commits before the stop"
    );
    docker_ok(&["stop", "--time", "60", &sink.name]);
    assert_eq!(
        inspect(&sink.name, "{{.State.ExitCode}}"),
        "0",
        "{}",
        logs(&sink.name)
    );
    assert_eq!(query_one(&vars, &mounts, LANDED), good.to_string());
    assert_eq!(query_one(&vars, &mounts, DOUBLED), "0");

    // An OHLCV question from the image's shell over the same tables.
    let symbol_day = query_one(
        &vars,
        &mounts,
        "select symbol || '|' || cast(cast(min(exchange_timestamp) as date) - 1 as varchar) \
         || '|' || cast(cast(max(exchange_timestamp) as date) + 2 as varchar) || '|' || exchange \
         from trades group by symbol, exchange order by symbol limit 1",
    );
    let [symbol, from, to, exchange]: [&str; 4] = symbol_day
        .split('|')
        .collect::<Vec<_>>()
        .try_into()
        .unwrap_or_else(|_| panic!("{symbol_day}"));
    let bars = run_ok(
        &vars,
        &mounts,
        &[
            "k2-query",
            "--format",
            "csv",
            "-c",
            &format!(".ohlcv {symbol} 1m {from} {to} --exchange {exchange}"),
        ],
    );
    assert!(
        bars.lines().next().is_some_and(|h| h.contains("open")) && bars.lines().count() > 1,
        "{bars}"
    );

    // The embedded default in the image keeps its catalog and warehouse in its volume,
    // written as the image's user.
    let embedded: Vec<_> = vars
        .iter()
        .filter(|(k, _)| {
            !(k.starts_with("K2_CATALOG")
                || k.starts_with("K2_WAREHOUSE")
                || k == "K2_KAFKA__GROUP_ID")
        })
        .cloned()
        .collect();
    let group = unique("group");
    let embedded = with(&embedded, &[("K2_KAFKA__GROUP_ID", group.as_str())]);
    run_ok(&embedded, &sink_mounts, &["k2-sink", "--once"]);
    assert_eq!(query_one(&embedded, &sink_mounts, LANDED), good.to_string());
    let owner = run_ok(
        &embedded,
        &sink_mounts,
        &["sh", "-c", "stat -c %U /var/lib/k2 && ls /var/lib/k2"],
    );
    assert!(owner.starts_with("k2\n"), "{owner}");
    drop(sink);
}

/// docker-compose with docker-compose.yml and docker/compose.native.yml, as project `name`.
fn compose(project: &str, vars: &[(String, String)], args: &[&str]) -> std::process::Output {
    let root = repo_root();
    std::process::Command::new("docker-compose")
        .current_dir(&root)
        .args(["--no-ansi", "-p", project, "-f", "docker-compose.yml", "-f"])
        .arg(root.join("docker/compose.native.yml"))
        .args(args)
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("docker-compose (Debian's docker-compose)")
}

fn compose_ok(project: &str, vars: &[(String, String)], args: &[&str]) -> String {
    succeeded(
        &compose(project, vars, args),
        &format!("docker-compose {args:?}"),
    )
}

/// Takes the compose project down with its volumes, also when the test fails.
struct Project<'a>(&'a str, &'a [(String, String)]);

impl Drop for Project<'_> {
    fn drop(&mut self) {
        let _ = compose(self.0, self.1, &["down", "-v", "--remove-orphans"]);
    }
}

#[test]
fn compose_brings_up_k2s_services_scaled_on_the_native_services() {
    ensure_services();
    let image = image();
    let env = TestEnv::new();
    env.set_partitions(2, 1);
    let topics = image_topics_file(&env.topics);
    let maintain_port = free_port(&[0]).to_string();
    let mut vars = k2_vars(&env);
    // docker/compose.native.yml's variables.
    vars.extend(
        [
            ("K2_IMAGE_TOPICS_FILE", topics.display().to_string()),
            ("K2_MAINTAIN_METRICS_PORT", maintain_port),
            ("K2_VERSION", image.trim_start_matches("k2:").to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let project = unique("k2img");
    let _down = Project(&project, &vars);

    compose_ok(
        &project,
        &vars,
        &[
            "up",
            "--no-deps",
            "--no-build",
            "--exit-code-from",
            "k2-init",
            "k2-init",
        ],
    );
    compose_ok(
        &project,
        &vars,
        &[
            "up",
            "-d",
            "--no-deps",
            "--no-build",
            "--scale",
            "k2-sink=2",
            "k2-sink",
            "k2-maintain",
        ],
    );
    let out = compose(
        &project,
        &vars,
        &[
            &["run", "--rm", "--no-deps", "-T", "k2-feed", "k2-feed"][..],
            &small_poisoned_feed("4000"),
        ]
        .concat(),
    );
    assert!(out.status.success(), "k2-feed: {}", stderr(&out));
    let good = 4000 - fed_poison(&out);

    let query = |sql: &str| {
        let text = compose_ok(
            &project,
            &vars,
            &[
                "run",
                "--rm",
                "--no-deps",
                "-T",
                "k2-query",
                "--format",
                "csv",
                "-c",
                sql,
            ],
        );
        text.lines().nth(1).unwrap_or_default().trim().to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let landed = query(LANDED);
        if landed == good.to_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "landed {landed} of {good}:\n{}",
            compose_ok(&project, &vars, &["logs", "--no-color", "k2-sink"])
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(query(DOUBLED), "0");

    // Both replicas took a share of the partitions; maintenance runs beside them.
    for n in 1..=2 {
        let container = format!("{project}_k2-sink_{n}");
        let log = logs(&container);
        assert!(
            log.lines()
                .any(|l| l.contains("partitions assigned") && !l.contains("\"partitions\":0")),
            "{container} was assigned nothing:\n{log}"
        );
        assert_eq!(inspect(&container, "{{.State.Running}}"), "true");
    }
    wait_healthy(
        &format!("{project}_k2-maintain_1"),
        Duration::from_secs(120),
    );
}
