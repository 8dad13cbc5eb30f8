//! Platforms without a proven process start-time source here: liveness rests on the pid.

use crate::soft::record::Token;

pub(crate) fn pid_namespace() -> Option<u64> {
    None
}

pub(crate) fn start_token(_pid: u32) -> Option<Token> {
    None
}

pub(crate) fn owner_runs_elsewhere(_pid: u32, _start: Option<Token>) -> bool {
    false
}
