//! `Rate`: "N per period" limits, applied with GCRA (the generic cell rate algorithm).
//!
//! GCRA keeps ONE number per key — the theoretical arrival time (TAT) of the next event —
//! which is what lets the state live in a shared database row, so a limit holds across
//! every replica. The rate-limit crates we looked at keep their state in process memory
//! (`governor`) or as a process-local `Instant` (`gcra`), neither of which can be shared
//! between processes; the algorithm itself is the few lines below.

use std::fmt;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed in one period (also the burst).
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    /// Parses `10/1h`, `5/30m`, `20/10m`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (count, period) = raw
            .trim()
            .split_once('/')
            .ok_or("use N/period, e.g. 10/1h")?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| "N must be a whole number")?;
        let period = humantime::parse_duration(period.trim()).map_err(|e| e.to_string())?;
        if count == 0 || period.is_zero() {
            return Err("N and the period must be more than zero".into());
        }
        Ok(Self { count, period })
    }

    /// Milliseconds one event adds to the bucket's TAT.
    pub fn emission_ms(self) -> i64 {
        (self.period.as_millis() as i64 / i64::from(self.count)).max(1)
    }

    /// The period in milliseconds.
    pub fn period_ms(self) -> i64 {
        self.period.as_millis() as i64
    }

    /// One GCRA step at `now` (ms): the new TAT if the event is allowed, or how long to
    /// wait. Up to `count` events may arrive at once; then one per `period / count`.
    pub fn check(self, tat: Option<i64>, now: i64) -> Result<i64, Duration> {
        let period = self.period.as_millis() as i64;
        let new_tat = tat.unwrap_or(now).max(now) + self.emission_ms();
        let allowed_at = new_tat - period;
        if allowed_at <= now {
            Ok(new_tat)
        } else {
            Err(Duration::from_millis((allowed_at - now) as u64))
        }
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.period)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_of_n_then_one_per_interval() {
        let r = Rate::parse("5/1h").unwrap();
        let mut tat = None;
        for _ in 0..5 {
            tat = Some(r.check(tat, 0).expect("within the burst"));
        }
        let wait = r.check(tat, 0).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_secs(12 * 60),
            "one per 12 minutes after the burst"
        );
        assert!(r.check(tat, 12 * 60 * 1000 - 1).is_err());
        assert!(r.check(tat, 12 * 60 * 1000).is_ok());
        // A long quiet time restores the whole burst, no more.
        let later = 10 * 3600 * 1000;
        let mut t = tat;
        for _ in 0..5 {
            t = Some(r.check(t, later).unwrap());
        }
        assert!(r.check(t, later).is_err());
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(Rate::parse("20/10m").unwrap().count, 20);
        for bad in ["", "10", "x/1h", "0/1h", "10/0s", "10/banana"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }
}
