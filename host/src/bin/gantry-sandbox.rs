//! The sandbox launcher on its own: what `gantry __sandbox-exec` does (see
//! `gantry::tasks::sandbox`), in a binary that links only that. Starting the whole `gantry`
//! binary costs about 3 ms (relocating and faulting in ~37 MB); this one about 1 ms, paid once
//! per task. `gantry serve` uses it when it lies beside the `gantry` binary.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    // Launched exactly as `gantry` would be: the mode argument comes first.
    if args.peek().map(|a| a.as_os_str())
        == Some(std::ffi::OsStr::new(gantry::tasks::sandbox::LAUNCHER_ARG))
    {
        args.next();
    }
    gantry::tasks::sandbox::launch(args.collect())
}
