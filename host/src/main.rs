fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os();
    // Task processes start through the binary itself, as a sandbox launcher (see
    // `gantry::tasks::sandbox`): handled before anything else initialises.
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(gantry::tasks::sandbox::LAUNCHER_ARG)) {
        return gantry::tasks::sandbox::launch(args.collect());
    }
    gantry::cli::main()
}
