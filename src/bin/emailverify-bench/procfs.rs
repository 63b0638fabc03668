//! What the bench reads of a process from `/proc` (Linux): its CPU time, its children's,
//! its memory.

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces), so
/// that field N of the line is `[N - 3]`.
pub fn stat_fields(pid: &str) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

/// Linux reports CPU times in USER_HZ, 100 a second on every architecture it runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of a process (`self` or a pid), in seconds: `utime`+`stime`.
pub fn cpu_seconds(pid: &str) -> f64 {
    let f = stat_fields(pid);
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / TICKS_PER_SECOND
}

/// CPU time of a process's exited and reaped children, in seconds: `cutime`+`cstime`.
pub fn reaped_seconds(pid: &str) -> f64 {
    let f = stat_fields(pid);
    let ticks = f.get(13).copied().unwrap_or(0) + f.get(14).copied().unwrap_or(0);
    ticks as f64 / TICKS_PER_SECOND
}

/// A memory figure of a process (`VmHWM:` peak, `VmRSS:` now), in kB.
pub fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
