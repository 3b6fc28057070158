//! The time K2 stamps snapshots with and judges their age by: the wall clock. Builds with
//! the `failpoints` feature (only the tests' builds) add `K2_TEST_CLOCK_SKEW` (a duration
//! such as `26h`), so a test can stand after a day's end without waiting for it — the same
//! arrangement as the fail points: inert unless armed, absent from a release build.

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis() + skew_ms()
}

fn skew_ms() -> i64 {
    if !cfg!(feature = "failpoints") {
        return 0;
    }
    std::env::var("K2_TEST_CLOCK_SKEW")
        .ok()
        .and_then(|v| {
            let (negative, v) = match v.strip_prefix('-') {
                Some(rest) => (true, rest.to_string()),
                None => (false, v),
            };
            let ms = humantime::parse_duration(&v).ok()?.as_millis() as i64;
            Some(if negative { -ms } else { ms })
        })
        .unwrap_or(0)
}
