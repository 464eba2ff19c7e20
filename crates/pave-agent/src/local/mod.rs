//! The `local` target: this host. Commands become child processes, each in its
//! own process group so that a cancel or a timeout leaves no stray children.

pub mod job;
pub mod process;
pub mod workload;
