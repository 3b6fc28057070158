//! `k2-admin maintain`: each step over each table, a line per table of what it did.
//! A failing table does not stop the others; the exit code says whether any failed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use k2_common::config::K2Config;
use k2_maintain::compact;
use k2_maintain::expire::{self, Retention};
use k2_maintain::metadata_commit::MetadataCommitter;
use k2_maintain::orphans;

use super::MaintainStep;

pub async fn run(
    config: &K2Config,
    step: MaintainStep,
    table: Option<&str>,
    dry_run: bool,
    older_than: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let tables = k2_maintain::tables(table).map_err(|e| anyhow::anyhow!("--table: {e}"))?;
    let catalog = k2_common::catalog::connect(config).await?;
    let policy = &config.maintenance;
    let committer = if matches!(step, MaintainStep::Compact | MaintainStep::All) {
        Some(MetadataCommitter::connect(config).await?)
    } else {
        None
    };
    let mut failed = false;
    for ident in &tables {
        if let Some(committer) = &committer {
            let started = Instant::now();
            let policy = compact::Policy::new(policy, older_than);
            let compacted = compact::compact(
                catalog.as_ref(),
                committer,
                ident,
                policy,
                chrono::Utc::now(),
                dry_run,
            )
            .await;
            match compacted {
                Ok(done) => println!("{done} ({:.1}s)", started.elapsed().as_secs_f64()),
                Err(e) => {
                    failed = true;
                    println!("FAILED: compact {e}");
                }
            }
        }
        if matches!(step, MaintainStep::Expire | MaintainStep::All) {
            let started = Instant::now();
            let retention = Retention::new(policy, chrono::Utc::now());
            match expire::expire(catalog.as_ref(), ident, retention, dry_run).await {
                Ok(done) => println!("{done} ({:.1}s)", started.elapsed().as_secs_f64()),
                Err(e) => {
                    failed = true;
                    println!("FAILED: expire {e}");
                }
            }
        }
        if matches!(step, MaintainStep::Clean | MaintainStep::All) {
            let started = Instant::now();
            let cleaned = orphans::clean(
                config,
                catalog.as_ref(),
                ident,
                policy.orphan_min_age,
                chrono::Utc::now(),
                dry_run,
            )
            .await;
            match cleaned {
                Ok(done) => {
                    println!("{done} ({:.1}s)", started.elapsed().as_secs_f64());
                    if dry_run {
                        for (uri, bytes) in &done.orphans {
                            println!("  {uri} ({bytes} bytes)");
                        }
                    }
                }
                Err(e) => {
                    failed = true;
                    println!("FAILED: clean {e}");
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
