//! The sandbox launcher on its own: what `gantry __sandbox-exec` does (see
//! `gantry::tasks::sandbox`), in a binary that links only that. Starting the whole `gantry`
//! binary costs about 3 ms (relocating and faulting in ~37 MB); this one about 1 ms, paid once
//! per task. `gantry serve` uses it when it lies beside the `gantry` binary.
//!
//! `no_main`: the C `main` skips the Rust runtime's start-up (its main-thread stack guard
//! alone reads and parses `/proc/self/maps`), about 0.4 ms of a process that only sets limits
//! and execs. `std::env::args_os` still works: glibc hands the arguments to std's initialiser.

#![no_main]

use std::ffi::{c_char, c_int};

/// Exit status when the program could not be started (as a shell has it).
const CANNOT_RUN: c_int = 127;

#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    let mut args = std::env::args_os().skip(1).peekable();
    // Run inside a sandbox as the isolation probe (see `gantry::tasks::isolation`).
    if args.peek().map(|a| a.as_os_str())
        == Some(std::ffi::OsStr::new(gantry::tasks::sandbox::PROBE_ARG))
    {
        let rest: Vec<_> = args.skip(1).collect();
        return gantry::tasks::isolation::probe_main(&rest).into();
    }
    // Started ahead of demand; its task comes later (see `gantry::tasks::sandbox::warm`).
    if args.peek().map(|a| a.as_os_str())
        == Some(std::ffi::OsStr::new(gantry::tasks::sandbox::warm::WARM_ARG))
    {
        let rest: Vec<_> = args.skip(1).collect();
        return match gantry::tasks::sandbox::warm::launch_warm(rest) {
            code if code == std::process::ExitCode::SUCCESS => 0,
            _ => CANNOT_RUN,
        };
    }
    // Launched exactly as `gantry` would be: the mode argument comes first.
    if args.peek().map(|a| a.as_os_str())
        == Some(std::ffi::OsStr::new(gantry::tasks::sandbox::LAUNCHER_ARG))
    {
        args.next();
    }
    // `launch` returns only when it could not become the program; it said why on stderr.
    let _ = gantry::tasks::sandbox::launch(args.collect());
    CANNOT_RUN
}
