/// Every request, call and log line allocates; mimalloc's per-thread free lists make that
/// cheaper than glibc's arenas under gantry's many short-lived tasks (see the README's
/// Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os();
    // Task processes start through the binary itself, as a sandbox launcher (see
    // `gantry::tasks::sandbox`): handled before anything else initialises.
    match args.nth(1) {
        Some(a) if a == gantry::tasks::sandbox::LAUNCHER_ARG => {
            return gantry::tasks::sandbox::launch(args.collect());
        }
        Some(a) if a == gantry::tasks::sandbox::warm::WARM_ARG => {
            return gantry::tasks::sandbox::warm::launch_warm(args.collect());
        }
        Some(a) if a == gantry::tasks::sandbox::PROBE_ARG => {
            let rest: Vec<_> = args.collect();
            return gantry::tasks::isolation::probe_main(&rest).into();
        }
        _ => {}
    }
    gantry::cli::main()
}
