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

/// The accept queue the relays ask for (the kernel caps it at `net.core.somaxconn`), the same
/// as the node's, so connection churn compares servers rather than backlogs.
const ACCEPT_BACKLOG: u32 = 65_535;

/// Binds `addr` for accepting with the largest accept queue the kernel allows.
pub fn bind_listener(addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
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

/// The kernel's TCP socket memory, system-wide (both ends of a loopback connection count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelTcp {
    /// TCP sockets in use (`/proc/net/sockstat`, `TCP: inuse`).
    pub sockets: u64,
    /// Socket buffer memory in KiB (`/proc/net/sockstat`, `TCP: mem`, in 4 KiB pages).
    pub buffers_kib: u64,
    /// Memory of the TCP socket objects in KiB (`/proc/slabinfo`, slab `TCP`: active objects ×
    /// object size), when readable (root).
    pub objects_kib: Option<u64>,
}

/// Reads the kernel's TCP socket memory now.
pub fn kernel_tcp() -> io::Result<KernelTcp> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat")?;
    let (sockets, pages) = parse_sockstat_tcp(&sockstat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no TCP line in /proc/net/sockstat",
        )
    })?;
    let objects_kib = std::fs::read_to_string("/proc/slabinfo")
        .ok()
        .and_then(|text| parse_slab_bytes(&text, "TCP"))
        .map(|bytes| bytes / 1024);
    Ok(KernelTcp {
        sockets,
        buffers_kib: pages * 4,
        objects_kib,
    })
}

/// `inuse` and `mem` of the `TCP:` line of `/proc/net/sockstat`.
pub fn parse_sockstat_tcp(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let value = |name: &str| -> Option<u64> {
        let at = fields.iter().position(|f| *f == name)?;
        fields.get(at + 1)?.parse().ok()
    };
    Some((value("inuse")?, value("mem")?))
}

/// Active objects × object size of slab `name` in a `/proc/slabinfo` text.
pub fn parse_slab_bytes(text: &str, name: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))?;
    let mut fields = line.split_whitespace().skip(1);
    let active: u64 = fields.next()?.parse().ok()?;
    let _total: u64 = fields.next()?.parse().ok()?;
    let size: u64 = fields.next()?.parse().ok()?;
    Some(active * size)
}

/// GETs a plain `http://host:port/path` URL and checks for a 2xx answer (the body is read and
/// dropped).
pub async fn http_get(url: &str) -> io::Result<()> {
    http_get_body(url).await.map(drop)
}

/// GETs a plain `http://host:port/path` URL; the body of a 2xx answer.
pub async fn http_get_body(url: &str) -> io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {why}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{url}: no answer")))??;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(200..=299) => Ok(text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, body)| body.to_string())),
        other => Err(invalid(&format!("answered {other:?}"))),
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
    fn parses_kernel_tcp_memory() {
        let sockstat =
            "sockets: used 310\nTCP: inuse 27 orphan 0 tw 3 alloc 40 mem 12\nUDP: inuse 2 mem 1\n";
        assert_eq!(parse_sockstat_tcp(sockstat), Some((27, 12)));
        assert_eq!(parse_sockstat_tcp("UDP: inuse 1 mem 1\n"), None);
        let slab = "slabinfo - version: 2.1\n# name <active_objs> <num_objs> <objsize> ...\n\
                    TCPv6 10 12 2432 13 8\nTCP 100 120 2304 14 8 : tunables 0 0 0\n";
        assert_eq!(parse_slab_bytes(slab, "TCP"), Some(230_400));
        assert_eq!(parse_slab_bytes(slab, "UDP"), None);
        assert!(kernel_tcp().is_ok());
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
