//! CPU time and peak RSS from getrusage.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu: Duration,
    /// Peak resident set size in bytes.
    pub max_rss: u64,
}

fn get(who: libc::c_int) -> Usage {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Usage {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss: ru.ru_maxrss as u64 * 1024,
    }
}

/// This process so far.
pub fn own() -> Usage {
    get(libc::RUSAGE_SELF)
}

/// Every waited-for child so far (peak RSS: the largest child's).
pub fn children() -> Usage {
    get(libc::RUSAGE_CHILDREN)
}

/// This process's resident set size now, in bytes (from /proc/self/statm).
pub fn current_rss() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    pages * page
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// What jemalloc (the Rust heap) holds now: bytes the program has allocated and bytes
/// jemalloc keeps resident for them. RSS minus `resident` is memory jemalloc does not own —
/// DuckDB's and librdkafka's (both allocate through glibc), stacks, mapped files.
#[derive(Debug, Clone, Copy)]
pub struct Heap {
    pub allocated: u64,
    pub resident: u64,
}

pub fn heap() -> Heap {
    use tikv_jemalloc_ctl::{epoch, stats};
    // The statistics are a snapshot taken when the epoch advances.
    let _ = epoch::advance();
    Heap {
        allocated: stats::allocated::read().unwrap_or(0) as u64,
        resident: stats::resident::read().unwrap_or(0) as u64,
    }
}
