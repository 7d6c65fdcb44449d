//! Tools for plugin authors, behind `gantry plugin …`: [`scaffold`] makes a new project from a
//! template, [`record`] captures a real CLI run as a [`transcript`], and [`replay`] runs a
//! backend component over transcripts with no server, no process and no network, comparing
//! what it makes of them with expected files.

pub mod record;
pub mod replay;
pub mod scaffold;
pub mod transcript;
