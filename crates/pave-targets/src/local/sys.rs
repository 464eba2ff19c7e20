//! Process plumbing on Linux: signals, `/proc`, and the few `unsafe` libc calls
//! std does not wrap (setsid and a cgroup join between fork and exec).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::path::Path;

/// Sends `sig` to process `pid`; whether it was delivered.
pub fn signal_pid(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) only signals; it touches no memory of ours.
    pid > 1 && unsafe { libc::kill(pid, sig) } == 0
}

/// Sends `sig` to every process of group `pgid`; errors (the group is gone) are ignored.
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: as above, with a negative pid meaning the group.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// The fields of `/proc/PID/stat` we use.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub state: char,
    pub pgrp: i32,
    /// Start time in clock ticks since boot (field 22), which tells a process
    /// from a later one that reuses its pid.
    pub start_time: u64,
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    let start_time = fields.nth(16)?.parse().ok()?;
    Some(ProcStat {
        state,
        pgrp,
        start_time,
    })
}

pub fn start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|s| s.start_time)
}

/// Whether `pid` is the (non-zombie) process that started at `start_time`.
pub fn alive(pid: i32, start_time: u64) -> bool {
    matches!(proc_stat(pid), Some(s) if s.state != 'Z' && s.start_time == start_time)
}

/// Living processes of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| matches!(proc_stat(pid), Some(s) if s.pgrp == pgid && s.state != 'Z'))
        .collect()
}

/// SIGKILLs what is left of the process group led by `pgid`, which started at
/// `start_time`. If a different process now has that pid, the group is long gone
/// (a pid is not reused while its group exists) and nothing is killed.
pub fn kill_group(pgid: i32, start_time: u64) {
    if pgid <= 1 {
        return;
    }
    match proc_stat(pgid) {
        Some(s) if s.start_time != start_time => {}
        _ => {
            signal_group(pgid, libc::SIGKILL);
        }
    }
}

/// Whether anything of the group led by `pgid` (started at `start_time`) lives.
pub fn group_alive(pgid: i32, start_time: u64) -> bool {
    match proc_stat(pgid) {
        Some(s) if s.start_time != start_time => false,
        _ => !group_members(pgid).is_empty(),
    }
}

/// Puts the spawned process in a session of its own, so that it survives its
/// parent and gets no signal meant for the parent's group or terminal.
pub fn detach(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid(2) is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Moves the child into the cgroup whose `cgroup.procs` is `procs` before it
/// execs, so that not one allocation escapes the limit. Failure is ignored here
/// (the parent adds the pid again after the spawn and reports errors).
pub fn join_cgroup_before_exec(cmd: &mut tokio::process::Command, procs: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = CString::new(procs.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: open/write/close are async-signal-safe; `path` was allocated before
    // the fork and is only read.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                // "0" is the writing process itself, in cgroup v1 and v2.
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
            Ok(())
        });
    }
}

/// Whether a process of group `pgid` (the replica's command and its children)
/// listens on TCP `port`: the answer of a readiness probe only counts when it
/// comes from the replica itself, not from another program that took the port
/// while the replica was down.
pub fn group_listens_on(pgid: i32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    group_members(pgid).into_iter().any(|pid| {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                let t = target.to_string_lossy();
                t.strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .is_some_and(|inode| inodes.iter().any(|i| i == inode))
            })
        })
    })
}

/// Socket inodes listening on `port` (IPv4 or IPv6).
fn listening_inodes(port: u16) -> Vec<String> {
    let hex_port = format!("{port:04X}");
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is "ADDR:PORT"; state 0A is LISTEN; the inode is column 9.
            if cols.len() > 9
                && cols[3] == "0A"
                && cols[1].rsplit_once(':').map(|(_, p)| p) == Some(hex_port.as_str())
            {
                out.push(cols[9].to_string());
            }
        }
    }
    out
}
