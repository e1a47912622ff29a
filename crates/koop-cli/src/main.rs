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

/// The allocator: jemalloc, with the options of `JEMALLOC_SYS_WITH_MALLOC_CONF` in
/// `.cargo/config.toml` built in (one arena, freed pages returned within 250 ms, thread caches
/// for blocks up to 4 KiB). FeatureServer pages are allocated on SQLite's threads and freed on
/// the writer's; glibc's arenas serialised that hand-over on their locks. Measured side by side
/// (two `koop serve` on one cache, alternating oha runs): query pages 15–25 % faster than glibc
/// with `MALLOC_ARENA_MAX=2`; `cargo xtask bench abuse` peak RSS 139 MiB (goal ≤ 150) while
/// answering 1.8× the requests. A user's `_RJEM_MALLOC_CONF` overrides the built-in options.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
