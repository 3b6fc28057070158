//! `k2-bench measure -- CMD…`: wall time, CPU time and peak RSS of one command (its
//! output passes through), as `measure: wall_seconds=… cpu_seconds=… max_rss_mib=…`.

use std::time::Instant;

use anyhow::{Context, bail};

use crate::usage;

#[derive(clap::Args)]
pub struct Args {
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true)]
    command: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let status = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .status()
        .with_context(|| format!("running {}", args.command[0]))?;
    let wall = started.elapsed();
    let u = usage::children();
    println!(
        "measure: wall_seconds={:.3} cpu_seconds={:.3} max_rss_mib={:.1} exit={}",
        wall.as_secs_f64(),
        u.cpu.as_secs_f64(),
        usage::mib(u.max_rss),
        status.code().unwrap_or(-1)
    );
    if !status.success() {
        bail!("{} failed: {status}", args.command[0]);
    }
    Ok(())
}
