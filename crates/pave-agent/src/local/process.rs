//! Process-group plumbing on Unix. The few `unsafe` calls are the libc
//! functions that std does not wrap (signals to a group, parent-death signal).
#![allow(unsafe_code)]

use std::path::Path;

/// Sends `sig` to every process in group `pgid`. Errors (the group is gone) are ignored:
/// the only caller wants the group dead.
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid only signals; it touches no memory of ours.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Whether any process of the group still exists.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    pgid > 1 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// Makes the child die with its parent, so that a control plane killed with
/// SIGKILL does not leave its jobs running unobserved. Called between fork and exec.
pub fn set_parent_death_signal(cmd: &mut tokio::process::Command) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The start time of a process (field 22 of `/proc/PID/stat`), used to tell a
/// process from a later one that reuses its pid.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}
