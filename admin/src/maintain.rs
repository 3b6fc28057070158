//! `k2-admin maintain`: each step over each table, a line per table of what it did. A
//! failing table does not stop the others; the exit code says whether any failed. With
//! `--every`, the steps run again and again until SIGTERM or Ctrl-C (which let the current
//! run finish), and their metrics are served on `metrics.address`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceberg::{Catalog, TableIdent};
use k2_common::config::K2Config;
use k2_maintain::bars;
use k2_maintain::compact;
use k2_maintain::expire;
use k2_maintain::instrumentation::MaintenanceMetrics;
use k2_maintain::orphans;
use k2_maintain::progress::{Progress, Silent};
use k2_table::commit::MetadataCommitter;
use k2_table::retention;

use crate::progress::CompactionBar;

use super::MaintainStep;

/// What was asked on the command line.
pub struct Request {
    pub step: MaintainStep,
    pub table: Option<String>,
    pub dry_run: bool,
    pub older_than: Option<Duration>,
    pub every: Option<Duration>,
}

/// Everything a run needs, connected once.
struct Maintainer<'a> {
    config: &'a K2Config,
    request: &'a Request,
    tables: Vec<TableIdent>,
    catalog: Arc<dyn Catalog>,
    committer: Option<Arc<MetadataCommitter>>,
    metrics: MaintenanceMetrics,
    bar: CompactionBar,
}

pub async fn run(config: &K2Config, request: Request) -> anyhow::Result<ExitCode> {
    let tables = k2_maintain::tables(request.table.as_deref())
        .map_err(|e| anyhow::anyhow!("--table: {e}"))?;
    let catalog = k2_common::catalog::connect(config).await?;
    let committer = if matches!(
        request.step,
        MaintainStep::Compact | MaintainStep::Expire | MaintainStep::All
    ) {
        Some(MetadataCommitter::connect(config).await?)
    } else {
        None
    };
    let m = Maintainer {
        config,
        request: &request,
        tables,
        catalog,
        committer,
        metrics: MaintenanceMetrics::new(),
        bar: CompactionBar::default(),
    };
    let Some(every) = request.every else {
        return Ok(if m.run_once().await {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    };
    if let Some(addr) = config.metrics.address {
        // A schedule that cannot be observed does not start.
        let listener = k2_common::metrics::bind(addr).await?;
        let registry = m.metrics.registry();
        tokio::spawn(async move {
            let probe = Arc::new(k2_common::health::Serving);
            if let Err(e) =
                k2_common::metrics::serve_on(listener, registry, probe, Arc::new(|| {})).await
            {
                tracing::error!(error = %e, %addr, "cannot serve metrics");
            }
        });
    }
    let mut stop = std::pin::pin!(stop_signal());
    loop {
        let ok = m.run_once().await;
        tracing::info!(ok, next_in = ?every, "maintenance run done");
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stop => {
                tracing::info!("stop signal: no further runs");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// SIGTERM or Ctrl-C.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

impl Maintainer<'_> {
    /// A bar for a person at a terminal; nothing for a schedule (`--every`) or a pipe.
    fn progress(&self) -> &dyn Progress {
        if self.request.every.is_none() && crate::progress::on_terminal() {
            &self.bar
        } else {
            &Silent
        }
    }

    /// Every step asked for, over every table: compact, expire, clean. False if any failed.
    async fn run_once(&self) -> bool {
        let policy = &self.config.maintenance;
        let dry_run = self.request.dry_run;
        let step = self.request.step;
        let mut ok = true;
        for ident in &self.tables {
            let table = ident.to_string();
            // The bars table is made by the first bars run: until then there is nothing to
            // maintain (every other table's absence is a misconfigured catalog: an error).
            if ident.name() == k2_common::data_type::BARS_1M_TABLE
                && !self.catalog.table_exists(ident).await.unwrap_or(true)
            {
                println!("{table}: not built yet");
                continue;
            }
            let compacting = matches!(step, MaintainStep::Compact | MaintainStep::All);
            if let (Some(committer), true) = (&self.committer, compacting) {
                let started = Instant::now();
                let compacted = compact::compact(
                    self.catalog.as_ref(),
                    committer,
                    ident,
                    compact::Policy::new(policy, self.request.older_than),
                    chrono::Utc::now(),
                    dry_run,
                    self.progress(),
                )
                .await;
                ok &= self.report("compact", &table, started, compacted, |d| {
                    self.metrics.compacted(d)
                });
                // A closed day of trades gets its bars once it is compacted (bars describe
                // the day's files: built before compaction they would be built again).
                if ident == &k2_table::layout::table_ident(k2_common::DataType::Trades) {
                    let started = Instant::now();
                    let built = bars::build(
                        self.catalog.as_ref(),
                        committer,
                        compact::Policy::new(policy, self.request.older_than),
                        chrono::Utc::now(),
                        dry_run,
                    )
                    .await;
                    ok &= self.report("bars", &table, started, built, |d| {
                        self.metrics.bars_built(d)
                    });
                }
            }
            if matches!(step, MaintainStep::Expire | MaintainStep::All) {
                let started = Instant::now();
                let committer = self.committer.as_ref().expect("connected for expiry");
                let expired = expire::expire(
                    self.catalog.as_ref(),
                    committer,
                    ident,
                    retention::Policy::new(policy),
                    chrono::DateTime::from_timestamp_millis(k2_table::clock::now_ms())
                        .unwrap_or_default(),
                    dry_run,
                )
                .await;
                ok &= self.report("expire", &table, started, expired, |d| {
                    self.metrics.expired(d)
                });
            }
            if matches!(step, MaintainStep::Clean | MaintainStep::All) {
                let started = Instant::now();
                let cleaned = orphans::clean(
                    self.config,
                    self.catalog.as_ref(),
                    ident,
                    policy.orphan_min_age,
                    chrono::Utc::now(),
                    dry_run,
                )
                .await;
                if let (Ok(done), true) = (&cleaned, dry_run) {
                    for (uri, bytes) in &done.orphans {
                        println!("  {uri} ({bytes} bytes)");
                    }
                }
                ok &= self.report("clean", &table, started, cleaned, |d| {
                    self.metrics.cleaned(d)
                });
            }
        }
        ok
    }

    /// Prints one step's line, counts it; true if it succeeded.
    fn report<T: std::fmt::Display>(
        &self,
        step: &str,
        table: &str,
        started: Instant,
        result: Result<T, k2_maintain::MaintainError>,
        count: impl FnOnce(&T),
    ) -> bool {
        let ok = result.is_ok();
        match result {
            Ok(done) => {
                println!("{done} ({:.1}s)", started.elapsed().as_secs_f64());
                if !self.request.dry_run {
                    count(&done);
                }
            }
            Err(e) => println!("FAILED: {step} {e}"),
        }
        self.metrics.ran(step, table, ok);
        ok
    }
}
