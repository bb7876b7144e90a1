//! Helpers shared by the engine's integration tests.

use std::time::Duration;

/// Whether `pid` runs (a zombie counts as gone: it only waits to be reaped).
pub fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Polls (every 20 ms, at most `limit`) until `pid` is gone.
pub async fn gone_within(pid: i64, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
