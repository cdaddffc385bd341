//! CPU time and memory of a process, read from Linux `/proc`.

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ: 100 on every Linux
/// architecture Duet targets).
const TICKS_PER_SECOND: f64 = 100.0;

/// What a process has used so far. Fields are `None` where `/proc` did not
/// have them (another OS, a process that is gone).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// User plus system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Resident memory now (`VmRSS`), MB.
    pub rss_mb: f64,
    /// Peak resident memory (`VmHWM`), MB.
    pub max_rss_mb: f64,
    /// Proportional memory now (`Pss` of `smaps_rollup`: shared pages divided
    /// among the processes that share them), MB; `None` where not readable.
    pub pss_mb: Option<f64>,
}

impl ProcessUsage {
    /// This process's usage.
    pub fn this_process() -> Option<ProcessUsage> {
        ProcessUsage::of(std::process::id())
    }

    /// The usage of process `pid`; `None` when it does not exist (any more).
    pub fn of(pid: u32) -> Option<ProcessUsage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let pss_mb = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|rollup| kb_field(&rollup, "Pss:"))
            .map(|kb| kb / 1024.0);
        Some(ProcessUsage {
            cpu_seconds: cpu_seconds_of_stat(&stat)?,
            rss_mb: kb_field(&status, "VmRSS:")? / 1024.0,
            max_rss_mb: kb_field(&status, "VmHWM:")? / 1024.0,
            pss_mb,
        })
    }

    /// The summed usage of several processes (a browser and its helpers):
    /// CPU and memory added up over the ones that still exist.
    pub fn of_all(pids: &[u32]) -> ProcessUsage {
        let mut total = ProcessUsage {
            cpu_seconds: 0.0,
            rss_mb: 0.0,
            max_rss_mb: 0.0,
            pss_mb: Some(0.0),
        };
        for usage in pids.iter().filter_map(|pid| ProcessUsage::of(*pid)) {
            total.cpu_seconds += usage.cpu_seconds;
            total.rss_mb += usage.rss_mb;
            total.max_rss_mb += usage.max_rss_mb;
            total.pss_mb = total.pss_mb.zip(usage.pss_mb).map(|(a, b)| a + b);
        }
        total
    }
}

/// utime + stime of a `/proc/PID/stat` line, in seconds.
fn cpu_seconds_of_stat(stat: &str) -> Option<f64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// The number of kB on the line starting with `key` (`VmRSS:   1234 kB`).
fn kb_field(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let usage = ProcessUsage::this_process().expect("/proc is readable");
        assert!(usage.cpu_seconds >= 0.0);
        assert!(usage.rss_mb > 0.0 && usage.max_rss_mb >= usage.rss_mb);
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_is_skipped() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(cpu_seconds_of_stat(stat), Some(3.0));
    }

    #[test]
    fn a_process_that_is_gone_has_no_usage() {
        assert_eq!(ProcessUsage::of(u32::MAX), None);
        let nobody = ProcessUsage::of_all(&[u32::MAX]);
        assert_eq!(nobody.cpu_seconds, 0.0);
    }
}
