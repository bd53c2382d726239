//! Process resources the bench needs: the open-file limit and another process's resident
//! memory (`/proc/PID/status`).

use std::io;

use rlimit::Resource;

/// Raises `RLIMIT_NOFILE` so this process can hold `needed` descriptors; returns the soft limit
/// now in force. The hard limit is raised too when the process may (root / CAP_SYS_RESOURCE);
/// otherwise the soft limit goes up to the hard limit and the caller compares.
pub fn raise_nofile(needed: u64) -> io::Result<u64> {
    let (soft, hard) = Resource::NOFILE.get()?;
    if soft >= needed {
        return Ok(soft);
    }
    if hard >= needed {
        Resource::NOFILE.set(needed, hard)?;
        return Ok(needed);
    }
    match Resource::NOFILE.set(needed, needed) {
        Ok(()) => Ok(needed),
        Err(err) => {
            tracing::debug!(%err, hard, needed, "cannot raise the hard open-file limit");
            Resource::NOFILE.set(hard, hard)?;
            Ok(hard)
        }
    }
}

/// Resident set size of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss_kib(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no VmRSS line in /proc/{pid}/status"),
        )
    })
}

/// The `VmRSS:` value of a `/proc/PID/status` text, in KiB.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`: 100 on every Linux ABI this
/// runs on; reading it needs `sysconf`, which is unsafe FFI).
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / USER_HZ)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/PID/stat"))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks. The command
/// name (field 2) may contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: field 3 (state) is the first; utime is field 14, i.e. index 11 here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tsignaling-node\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12345));
        assert_eq!(parse_vm_rss_kib("Name: x\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS: lots kB\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS: 5 MB\n"), None);
    }

    #[test]
    fn reads_own_rss() {
        let kib = rss_kib(std::process::id()).unwrap();
        assert!(kib > 100, "{kib}");
    }

    #[test]
    fn raising_to_the_current_soft_limit_is_a_no_op() {
        let (soft, _) = Resource::NOFILE.get().unwrap();
        assert_eq!(raise_nofile(soft.min(64)).unwrap(), soft);
    }

    #[test]
    fn cpu_ticks_skip_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert!(cpu_seconds(std::process::id()).unwrap() >= 0.0);
    }
}
