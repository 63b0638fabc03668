//! PostgreSQL's CPU over the measured phases only (`--pg-postmaster PID`, Linux, a local
//! server this user may read `/proc` of): sampled right before the first measured sign-up,
//! after the last of their mails, and right after the last confirmation, while the
//! service's connections are all open, so neither the warm-up nor the service's start and
//! stop count; the two phases apart show which of the two use-cases costs what.
//!
//! Split in two: the backends serving the bench's database (the statements the service
//! sends), and every other PostgreSQL process (checkpointer, WAL writer, autovacuum, …),
//! whose work comes in bursts that a run of a few seconds catches or misses: a ratio of
//! the first between two builds is steady where the whole is not.
//! Live processes are read from `/proc/PID/schedstat` (nanoseconds); processes that
//! exited meanwhile from the postmaster's reaped children (`cutime`+`cstime`, ticks).

use std::collections::HashMap;

/// Samples taken at the ends of the measured phases: before the first sign-up, after the
/// sign-ups' last mail, after the last confirmation.
pub struct Meter {
    postmaster: u32,
    database: String,
    marks: Vec<Sample>,
}

impl Meter {
    /// The first sample, before the first measured sign-up.
    pub fn start(postmaster: u32, database: &str) -> Self {
        let marks = vec![sample(postmaster, database)];
        let database = database.to_owned();
        Meter {
            postmaster,
            database,
            marks,
        }
    }

    /// A sample at the end of a phase.
    pub fn mark(&mut self) {
        self.marks.push(sample(self.postmaster, &self.database));
    }

    /// The CPU over every phase per sign-up + confirmation (`pairs` of them), and the
    /// backends' per phase: sign-ups with their mails, then confirmations.
    pub fn report(&self, pairs: usize) -> String {
        let (first, last) = (&self.marks[0], &self.marks[self.marks.len() - 1]);
        let (serving, rest) = between(first, last);
        let per = |s: f64| s * 1000.0 / pairs.max(1) as f64;
        let mut line = format!(
            "PostgreSQL CPU over the measured sign-ups, mails and confirmations: backends serving {} {serving:.3} s, other processes {rest:.3} s; per sign-up + confirmation: pg_backends_ms_per_pair={:.3} pg_all_ms_per_pair={:.3}",
            self.database,
            per(serving),
            per(serving + rest),
        );
        if let [a, b, c] = &self.marks[..] {
            line += &format!(
                "; by phase: pg_backends_ms_per_signup={:.3} (with its mail) pg_backends_ms_per_confirm={:.3}",
                per(between(a, b).0),
                per(between(b, c).0),
            );
        }
        line
    }
}

#[derive(Default)]
pub struct Sample {
    /// Live children: CPU nanoseconds, and whether it serves the bench's database.
    live: HashMap<u32, (u64, bool)>,
    /// The postmaster's own CPU and its reaped children's, in nanoseconds.
    postmaster: u64,
}

/// PostgreSQL's processes now: `postmaster` and its children; a child serves `database`
/// when its process title names it ("postgres: [CLUSTER: ]USER DATABASE HOST(PORT) STATE").
pub fn sample(postmaster: u32, database: &str) -> Sample {
    let mut s = Sample {
        postmaster: running_ns(postmaster) + reaped_ns(postmaster),
        ..Sample::default()
    };
    let children =
        std::fs::read_to_string(format!("/proc/{postmaster}/task/{postmaster}/children"))
            .unwrap_or_default();
    for pid in children.split_whitespace().filter_map(|p| p.parse().ok()) {
        let title = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        // The words ending in ':' are the program's name and the server's cluster_name
        // (Debian's "postgres: 15/main: …"); the user and the database follow them.
        let serves = title
            .split_whitespace()
            .filter(|w| !w.ends_with(':'))
            .nth(1)
            == Some(database);
        s.live.insert(pid, (running_ns(pid), serves));
    }
    s
}

/// PostgreSQL's CPU seconds from `before` to `after`: (serving the database, the rest).
pub fn between(before: &Sample, after: &Sample) -> (f64, f64) {
    let (mut serving, mut rest) = (0u64, after.postmaster.saturating_sub(before.postmaster));
    for (pid, (ns, serves)) in &after.live {
        let was = before.live.get(pid).map_or(0, |(ns, _)| *ns);
        let d = ns.saturating_sub(was);
        if *serves {
            serving += d;
        } else {
            rest += d;
        }
    }
    (serving as f64 / 1e9, rest as f64 / 1e9)
}

/// Time a process has run on a CPU: the first field of `/proc/PID/schedstat`.
fn running_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU of a process's exited and reaped children, in nanoseconds.
fn reaped_ns(pid: u32) -> u64 {
    (super::procfs::reaped_seconds(&pid.to_string()) * 1e9) as u64
}
