//! The names of the contract's enums, as the APIs print and read them: the one mapping of each
//! enum to its strings on the guest side.

use crate::types::{ApprovalMode, OutputStream, PluginKind, SandboxMode, SessionStatus, TaskState};

/// `as_str`, `parse` and `ALL` (in declaration order) for an enum and its names.
macro_rules! names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in the order the contract declares them.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name the APIs use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            /// The value of a name (as [`Self::as_str`] writes it).
            pub fn parse(name: &str) -> Option<$ty> {
                match name {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

names!(ApprovalMode {
    Default => "default",
    Auto => "auto",
    None => "none",
    Always => "always",
});

names!(SandboxMode {
    Default => "default",
    ReadOnly => "read-only",
    Workspace => "workspace",
    Full => "full",
});

names!(TaskState {
    Pending => "pending",
    Running => "running",
    Done => "done",
    Failed => "failed",
    Cancelled => "cancelled",
    TimedOut => "timed_out",
    Interrupted => "interrupted",
});

names!(SessionStatus {
    Active => "active",
    Completed => "completed",
    Error => "error",
    Paused => "paused",
});

names!(PluginKind {
    Handler => "handler",
    Backend => "backend",
});

names!(OutputStream {
    Stdout => "stdout",
    Stderr => "stderr",
});

impl TaskState {
    /// Whether the task has ended (done, failed, cancelled, timed out or interrupted).
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskState::Pending | TaskState::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &m in ApprovalMode::ALL {
            assert_eq!(ApprovalMode::parse(m.as_str()), Some(m));
        }
        for &m in SandboxMode::ALL {
            assert_eq!(SandboxMode::parse(m.as_str()), Some(m));
        }
        for &s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
        }
        for &s in SessionStatus::ALL {
            assert_eq!(SessionStatus::parse(s.as_str()), Some(s));
        }
        for &k in PluginKind::ALL {
            assert_eq!(PluginKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(TaskState::TimedOut.as_str(), "timed_out");
        assert_eq!(SandboxMode::ReadOnly.as_str(), "read-only");
        assert_eq!(ApprovalMode::parse("yolo"), None);
        let terminal: Vec<_> = TaskState::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            terminal,
            ["done", "failed", "cancelled", "timed_out", "interrupted"]
        );
    }
}
