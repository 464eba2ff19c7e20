//! Process-group plumbing for jobs. Signals and `/proc` reading are the local
//! target's (`pave_targets::local::sys`); what is left here is the one libc
//! call only jobs need (the parent-death signal).
#![allow(unsafe_code)]

pub use pave_targets::local::sys::{signal_group, start_time};

/// Whether any (non-zombie) process of the group still exists.
pub fn group_alive(pgid: i32) -> bool {
    !pave_targets::local::sys::group_members(pgid).is_empty()
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
