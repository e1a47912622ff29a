//! `koop`: get Koordinates layers onto disk exactly once, from the command line.
//!
//! Exit codes: 0 when everything asked for is on disk, 1 when some layers failed (each listed
//! with its reason), 2 for usage and configuration errors (a bad id, a missing key, an
//! unwritable cache), 130 after Ctrl-C and 143 after SIGTERM (the work stopped cleanly).

mod cli;
mod commands;
mod ids;
mod progress;
mod signals;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::{Cli, Global};

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Everything asked for was done.
    Done,
    /// Some layers failed; each was reported.
    SomeFailed,
    /// Stopped by a signal: exit 130 (SIGINT) or 143 (SIGTERM).
    Interrupted(u8),
}

/// Sets up logging: progress bars (tracing-indicatif) unless quiet, and log lines above them.
/// Returns whether bars are drawn.
fn init_logging(global: &Global) -> bool {
    let interactive = std::io::stderr().is_terminal();
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) if interactive => "warn",
        (false, 0 | 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let ours = [
        "koop",
        "koop_api",
        "koop_cache",
        "koop_export",
        "koop_cli",
        "koop_testkit",
    ];
    let directives = format!(
        "warn,{}",
        ours.map(|target| format!("{target}={level}")).join(",")
    );
    let filter = EnvFilter::try_from_env("KOOP_LOG").unwrap_or_else(|_| EnvFilter::new(directives));
    let indicatif = tracing_indicatif::IndicatifLayer::new();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(indicatif.get_stderr_writer())
        .with_ansi(interactive)
        .with_target(false);
    let bars = !global.quiet;
    let registry = tracing_subscriber::registry();
    if interactive {
        let fmt = fmt.without_time().with_filter(filter);
        if bars {
            registry.with(fmt).with(indicatif).init();
        } else {
            registry.with(fmt).init();
        }
    } else {
        registry.with(fmt.with_filter(filter)).init();
    }
    bars && interactive
}

/// One line for an error and its causes, leaving out causes its message already contains.
pub(crate) fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// glibc's allocator settings for a long-running server, as `(variable, value)`: two arenas
/// instead of eight per core, and a fixed mmap threshold of 1 MiB (glibc's grows without bound
/// once a large block is freed) so large buffers go back to the system when freed instead of
/// staying in an arena. Measured by `cargo xtask bench abuse` (60 s, every attack at once):
/// peak RSS 237 MiB with glibc's defaults (178 MiB in 30 s), 127 MiB with these; `/status` p99
/// 33 ms. `cargo xtask bench featureserver`: peak RSS 92 → 56 MiB, query throughput unchanged
/// (a smaller threshold, 128 KiB, cost a fifth of it in page faults).
const SERVER_MALLOC: [(&str, &str); 2] = [
    ("MALLOC_ARENA_MAX", "2"),
    ("MALLOC_MMAP_THRESHOLD_", "1048576"),
];

/// `koop serve` (and `koop demo --serve`) re-executes itself once with [`SERVER_MALLOC`] when
/// none of them is set: glibc reads them only when a process starts. Setting any of them (or
/// `KOOP_MALLOC_DEFAULTS=1`) keeps the environment as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator_for_serving(cli: &Cli) {
    use std::os::unix::process::CommandExt;
    let serving = matches!(
        cli.command,
        cli::Command::Serve { .. } | cli::Command::Demo { serve: true, .. }
    );
    let chosen = std::env::var_os("KOOP_MALLOC_DEFAULTS").is_some()
        || SERVER_MALLOC
            .iter()
            .any(|(variable, _)| std::env::var_os(variable).is_some());
    if !serving || chosen {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // Only returns on failure: then serve with the defaults.
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(SERVER_MALLOC)
        .exec();
    eprintln!("koop serve: could not tune the allocator ({error}); using glibc's defaults");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator_for_serving(_: &Cli) {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tune_allocator_for_serving(&cli);
    let bars = init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(cli, bars)) {
        Ok(Status::Done) => ExitCode::SUCCESS,
        Ok(Status::SomeFailed) => ExitCode::from(1),
        Ok(Status::Interrupted(code)) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {}", one_line(error.as_ref()));
            ExitCode::from(2)
        }
    }
}
