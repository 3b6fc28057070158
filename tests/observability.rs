//! What an operator sees, checked by a real Prometheus (started by `scripts/services`)
//! scraping a live sink during a feed: every expression of the shipped Grafana dashboard
//! answers through Prometheus's HTTP API, the numbers agree with what was fed, and the
//! dead-letter alert fires from K2's own rule file.

use std::time::Duration;

use k2_tests::feed::Feed;
use k2_tests::poison::{self, poison_records};
use k2_tests::services::Prometheus;
use k2_tests::sink::{
    BackgroundFeed, http_get, metrics_address, produce, signal, wait_exit, wait_for_assignment,
};
use k2_tests::{TestEnv, ensure_services, repo_root};

const DASHBOARD: &str = "config/grafana/dashboards/k2-sink.json";

/// Every panel of the dashboard, rows' nested panels included.
fn panels(dashboard: &serde_json::Value) -> Vec<serde_json::Value> {
    fn walk(list: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p.clone());
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The dashboard's query expressions by panel title, with Grafana's variables set as a
/// user viewing `exchanges` (a regex alternation) over all sinks would have them.
fn expressions(dashboard: &serde_json::Value, exchanges: &str) -> Vec<(String, String)> {
    panels(dashboard)
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            p["targets"].as_array().into_iter().flatten().map(move |t| {
                let expr = t["expr"]
                    .as_str()
                    .expect("every target has an expr")
                    .replace("$__rate_interval", "1m")
                    .replace("$instance", ".*")
                    .replace("$exchange", exchanges);
                (title.clone(), expr)
            })
        })
        .collect()
}

#[test]
fn the_dashboard_is_well_formed() {
    let text = std::fs::read_to_string(repo_root().join(DASHBOARD)).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let all = panels(&dashboard);
    let mut ids: Vec<_> = all.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "panel ids are unique");
    let mut titles: Vec<_> = all.iter().map(|p| p["title"].as_str().unwrap()).collect();
    titles.sort();
    let n = titles.len();
    titles.dedup();
    assert_eq!(
        titles.len(),
        n,
        "panel titles are unique (the tests find panels by title)"
    );
    for p in &all {
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{} is wider than the grid", p["title"]);
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "{}",
                p["title"]
            );
            assert!(p["description"].as_str().is_some_and(|d| !d.is_empty()));
        }
    }
    // The drill-down repeats one row per exchange, from the exchange variable.
    assert!(all.iter().any(|p| p["repeat"] == "exchange"));
    let vars: Vec<_> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "instance", "exchange"]);
}

#[test]
fn every_dashboard_panel_answers_from_a_live_sink_and_agrees_with_the_feed() {
    ensure_services();
    let mut env = TestEnv::new();
    env.set_partitions(2, 1);
    poison::register_trade_without_price(&mut env, 9);
    env.var("K2_SINK__COMMIT__INTERVAL", "1s");
    env.create_topics();
    let log = "sink.log";
    let mut sink = env.spawn("k2-sink", &[], log);
    wait_for_assignment(&env, log, &mut sink);
    let address = metrics_address(&env, log);
    let prometheus = Prometheus::scraping(&env.dir.path().join("prometheus"), &[&address]);

    // Half a minute of market data (its sequence numbers jump between rounds: gaps), with
    // one record of every kind of bad input in the middle.
    let background = BackgroundFeed::start(&env, 400, 1);
    std::thread::sleep(Duration::from_secs(15));
    let poison = poison_records(&env, 9);
    let raws: Vec<_> = poison.iter().map(|p| p.raw.clone()).collect();
    produce(&k2_tests::runtime(), &Feed::new(), &raws);
    std::thread::sleep(Duration::from_secs(15));
    let fed = background.finish();
    let trades = fed.iter().filter(|k| k.0.contains(".trades.")).count() as f64;
    let quotes = fed.len() as f64 - trades;

    // Prometheus has scraped the sink after it committed everything and read to the end.
    let settle = Duration::from_secs(120);
    prometheus.wait_for(
        r#"sum(k2_records_written_total{table="trades"})"#,
        settle,
        |v| v >= trades,
    );
    prometheus.wait_for(
        r#"sum(k2_records_written_total{table="quotes"})"#,
        settle,
        |v| v >= quotes,
    );
    prometheus.wait_for("sum(k2_consumer_lag_records)", settle, |v| v == 0.0);

    let text = std::fs::read_to_string(repo_root().join(DASHBOARD)).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exchanges = format!("{}|{}", env.asx, env.binance);
    let exprs = expressions(&dashboard, &exchanges);
    assert!(exprs.len() >= 30, "{} expressions", exprs.len());
    let empty: Vec<_> = exprs
        .iter()
        .filter(|(_, e)| prometheus.query(e).is_empty())
        .map(|(t, e)| format!("{t}: {e}"))
        .collect();
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );

    // The overview's numbers are what was fed.
    let stat = |title: &str, table: Option<&str>| -> f64 {
        let (_, expr) = exprs
            .iter()
            .find(|(t, _)| t == title)
            .unwrap_or_else(|| panic!("no panel {title}"));
        let series = prometheus.query(expr);
        series
            .iter()
            .filter(|s| table.is_none_or(|t| s["metric"]["table"] == t))
            .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(stat("Records written", Some("trades")), trades);
    assert_eq!(stat("Records written", Some("quotes")), quotes);
    assert_eq!(stat("Dead letters", None), poison.len() as f64);
    assert_eq!(stat("Sinks up", None), 1.0);
    assert_eq!(
        stat("Sinks ready", None),
        1.0,
        "{:?}",
        http_get(&address, "/readyz")
    );
    assert_eq!(stat("Records behind", None), 0.0);
    let gaps = prometheus
        .value(&format!(
            r#"sum(k2_sequence_events_total{{kind="gap",exchange=~"{exchanges}"}})"#
        ))
        .unwrap_or(0.0);
    assert!(gaps > 0.0, "the feed's gaps are counted");

    // K2's rule file, evaluated by this Prometheus: the dead letters fire their alert.
    prometheus.wait_for(
        r#"count(ALERTS{alertname="K2DeadLetters",alertstate="firing"})"#,
        Duration::from_secs(30),
        |v| v >= 1.0,
    );

    signal(&sink, "TERM");
    let status = wait_exit(&mut sink, Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{}", env.log(log));
}
