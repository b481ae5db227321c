//! What the kernel says about a running process: /proc/<pid>/status fields (VmRSS, VmHWM), CPU
//! time from /proc/<pid>/stat, I/O counters from /proc/<pid>/io. Owns no measurement logic (the
//! bench and the tests decide what a figure means); reads nothing but those files.

/// A `Key:   1234 kB` field of /proc/<pid>/status, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/status has no {key}"))
}

/// utime + stime of /proc/<pid>/stat, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = s.rsplit_once(')').map(|(_, r)| r).ok_or("stat: no ')'")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the state field.
    let num = |i: usize| -> Result<u64, String> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("stat: field {} unreadable", i + 3))
    };
    Ok(num(11)? + num(12)?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when getconf is missing).
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Io {
    /// Bytes passed to write(2) and friends (any fd: files, sockets, pipes).
    pub wchar: u64,
    /// Bytes the process caused to be sent to the storage layer.
    pub write_bytes: u64,
    /// write(2)-family calls.
    pub syscw: u64,
}

pub fn io(pid: u32) -> Result<Io, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .map_err(|e| format!("/proc/{pid}/io: {e}"))?;
    let get = |k: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Io {
        wchar: get("wchar"),
        write_bytes: get("write_bytes"),
        syscw: get("syscw"),
    })
}
