//! Exit codes scripts can rely on (documented in docs/cli.md).

/// The command (or the action it waited for) succeeded.
pub const OK: i32 = 0;
/// Something went wrong that has no code of its own (a server error, bad local state).
pub const ERROR: i32 = 1;
/// The command line is wrong (clap also exits 2).
pub const USAGE: i32 = 2;
/// The action failed.
pub const ACTION_FAILED: i32 = 3;
/// Policy denied the action, or a reviewer rejected it.
pub const DENIED: i32 = 4;
/// The server could not be reached.
pub const UNREACHABLE: i32 = 5;
/// The token is missing, unknown, expired or revoked (401), or not allowed (403).
pub const UNAUTHORIZED: i32 = 6;
/// The action was cancelled.
pub const CANCELLED: i32 = 7;
/// The object asked for does not exist (404).
pub const NOT_FOUND: i32 = 8;
/// The request conflicts with the object's state (409), e.g. retrying a running action.
pub const CONFLICT: i32 = 9;
/// The request was refused as invalid (400, 413, 422).
pub const INVALID: i32 = 10;
/// The action waits for an approval (nothing ran yet).
pub const AWAITING_APPROVAL: i32 = 11;

/// The exit code for an action that ended in `state`.
pub fn for_state(state: pave_core::ActionState) -> i32 {
    use pave_core::ActionState::*;
    match state {
        Succeeded | RolledBack => OK,
        Failed => ACTION_FAILED,
        Denied | Rejected => DENIED,
        Cancelled => CANCELLED,
        AwaitingApproval => AWAITING_APPROVAL,
        _ => OK,
    }
}
