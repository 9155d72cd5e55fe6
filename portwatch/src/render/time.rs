//! Times: kernel timestamps as wall-clock time in **UTC** (no time-zone database is
//! read), ages and intervals.
//!
//! Kernel timestamps are `bpf_ktime_get_ns()` (CLOCK_MONOTONIC); [`Clock`] maps them to
//! wall-clock time with the REALTIME - MONOTONIC offset measured at start-up.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A clock could not be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "clock_gettime({clock}) failed: {source}; the tool needs CLOCK_REALTIME and CLOCK_MONOTONIC"
)]
pub struct ClockError {
    clock: &'static str,
    #[source]
    source: std::io::Error,
}

const NS_PER_SEC: i128 = 1_000_000_000;

fn now_ns(id: libc::clockid_t, name: &'static str) -> Result<i128, ClockError> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` that lives for the whole call; the
    // clock ids passed are constants the kernel knows.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return Err(ClockError {
            clock: name,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(i128::from(ts.tv_sec) * NS_PER_SEC + i128::from(ts.tv_nsec))
}

/// The kernel's monotonic clock now, in ns (the clock of event timestamps).
pub fn monotonic_now_ns() -> Result<u64, ClockError> {
    let ns = now_ns(libc::CLOCK_MONOTONIC, "CLOCK_MONOTONIC")?;
    Ok(u64::try_from(ns).unwrap_or(0))
}

/// CPU time this thread has used, kernel time included (what a BPF program run by
/// `BPF_PROG_TEST_RUN` costs lands here: it runs in the caller's context).
pub fn thread_cpu_time() -> Result<Duration, ClockError> {
    let ns = now_ns(libc::CLOCK_THREAD_CPUTIME_ID, "CLOCK_THREAD_CPUTIME_ID")?;
    Ok(Duration::from_nanos(u64::try_from(ns).unwrap_or(0)))
}

/// Maps kernel monotonic timestamps to wall-clock (UTC) time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, in ns.
    offset_ns: i128,
}

impl Clock {
    /// Measures the REALTIME - MONOTONIC offset now.
    pub fn new() -> Result<Clock, ClockError> {
        let mono0 = now_ns(libc::CLOCK_MONOTONIC, "CLOCK_MONOTONIC")?;
        let real = now_ns(libc::CLOCK_REALTIME, "CLOCK_REALTIME")?;
        let mono1 = now_ns(libc::CLOCK_MONOTONIC, "CLOCK_MONOTONIC")?;
        // Bracketing the REALTIME read halves the error of the offset.
        Ok(Clock {
            offset_ns: real - (mono0 + (mono1 - mono0) / 2),
        })
    }

    /// A clock with a given offset (tests, replays).
    pub fn from_offset_ns(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    /// Nanoseconds since the Unix epoch for a kernel monotonic timestamp.
    pub fn unix_ns(&self, ts_ns: u64) -> i128 {
        i128::from(ts_ns) + self.offset_ns
    }

    fn utc(&self, ts_ns: u64) -> DateTime<Utc> {
        let ns = self
            .unix_ns(ts_ns)
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        DateTime::from_timestamp_nanos(ns as i64)
    }

    /// `HH:MM:SS.mmm` in UTC.
    pub fn wall(&self, ts_ns: u64) -> String {
        self.utc(ts_ns).format("%H:%M:%S%.3f").to_string()
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2024-05-01T14:02:11.347Z`.
    pub fn rfc3339(&self, ts_ns: u64) -> String {
        self.utc(ts_ns).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }
}

/// A duration as a short age: `3.2s`, `42s`, `5m03s`, `2h05m`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    if s < 10 {
        format!("{}.{}s", s, d.subsec_millis() / 100)
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// An interval as given on the command line: `1s`, `0.5s`.
pub fn interval(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 2024-05-01T14:02:11.000Z as Unix seconds.
    pub(crate) const T0: i128 = 1_714_572_131;

    /// Kernel ts 5 s (+347 ms) after boot maps to T0 + 0.347 s.
    pub(crate) fn clock() -> Clock {
        Clock::from_offset_ns(T0 * NS_PER_SEC - 5 * NS_PER_SEC)
    }

    /// The RFC 3339 text of a Unix time in ns.
    fn at(unix_ns: i128) -> String {
        Clock::from_offset_ns(unix_ns).rfc3339(0)
    }

    #[test]
    fn civil_dates() {
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            at(T0 * NS_PER_SEC + 347_000_000),
            "2024-05-01T14:02:11.347Z"
        );
        // Leap day and end of year.
        assert_eq!(at(951_782_400 * NS_PER_SEC), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            at(1_704_067_199_999 * 1_000_000),
            "2023-12-31T23:59:59.999Z"
        );
        // Before the epoch rounds towards the past.
        assert_eq!(at(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn clock_maps_monotonic_to_wall() {
        let c = clock();
        assert_eq!(c.wall(5_347_000_000), "14:02:11.347");
        assert_eq!(c.rfc3339(5_347_000_000), "2024-05-01T14:02:11.347Z");
        let live = Clock::new().expect("clocks readable");
        // A timestamp taken now maps to roughly now.
        let mono = monotonic_now_ns().expect("monotonic");
        let real = now_ns(libc::CLOCK_REALTIME, "r").expect("realtime");
        assert!((live.unix_ns(mono) - real).abs() < 50_000_000);
    }

    #[test]
    fn ages() {
        assert_eq!(age(Duration::from_millis(3250)), "3.2s");
        assert_eq!(age(Duration::from_secs(42)), "42s");
        assert_eq!(age(Duration::from_secs(303)), "5m03s");
        assert_eq!(age(Duration::from_secs(7500)), "2h05m");
    }

    #[test]
    fn intervals() {
        assert_eq!(interval(Duration::from_secs(1)), "1s");
        assert_eq!(interval(Duration::from_millis(500)), "0.5s");
    }
}
