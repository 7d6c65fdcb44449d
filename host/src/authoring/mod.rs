//! Tools for plugin authors, behind `gantry plugin …`: [`scaffold`] makes a new project from a
//! template; [`record`] captures a real CLI run as a [`transcript`]; [`suite`] runs a
//! project's tests with no server and no network — a backend's transcripts [`replay`]ed
//! through its component, a handler's [`requests`] sent to it on a node assembled in memory —
//! and compares what the component makes of them with expected files.

pub mod record;
pub mod replay;
pub mod requests;
pub mod scaffold;
pub mod suite;
pub mod transcript;
