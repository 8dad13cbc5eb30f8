//! Child-process roles of the fault suite. Each scenario module adds its roles to [`entry`].

use crate::child::ROLE_VAR;

/// Plays this process's role if it is one of the fault suite's; returns whether it was.
pub fn entry() -> bool {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return false;
    };
    #[allow(clippy::match_single_binding)]
    match role.as_str() {
        _ => false,
    }
}
