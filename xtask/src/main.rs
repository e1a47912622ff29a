//! Maintenance tasks for the koop workspace: `cargo xtask <task>`.
//!
//! - `test`: every test: `cargo nextest run` (or `cargo test` without nextest) and the doctests.
//! - `ci`: what CI runs after installing system packages: fmt, clippy, test.
//! - `demo`: the main job on the built-in demo (the bundled test server and its layers).
//! - `bench`: the benchmarks, in release mode (`crates/koop-bench`).

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "koop maintenance tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run every test: nextest (or cargo test) over the workspace, then the doctests.
    Test,
    /// Check formatting and lints, then run every test.
    Ci,
    /// Run the benchmarks (release build): mirror, large, hit, geojson, featureserver; all by
    /// default.
    Bench {
        /// Arguments for the harness, e.g. `mirror` or `--large-mb 256`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run `koop demo`: mirror the bundled demo layers from the in-process test server, twice.
    Demo {
        /// Extra arguments for `koop demo`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

fn run(mut command: Command) -> Result<()> {
    let shown = format!("{command:?}");
    eprintln!("xtask: {shown}");
    let status = command
        .status()
        .with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|output| output.status.success())
}

fn test() -> Result<()> {
    let mut tests = cargo();
    if has_nextest() {
        tests.args([
            "nextest",
            "run",
            "--workspace",
            "--all-targets",
            "--no-fail-fast",
        ]);
    } else {
        tests.args(["test", "--workspace", "--all-targets", "--no-fail-fast"]);
    }
    run(tests)?;
    let mut doctests = cargo();
    doctests.args(["test", "--workspace", "--doc"]);
    run(doctests)
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Test => test(),
        Task::Ci => {
            let mut fmt = cargo();
            fmt.args(["fmt", "--all", "--check"]);
            run(fmt)?;
            let mut clippy = cargo();
            clippy.args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]);
            run(clippy)?;
            test()
        }
        Task::Bench { args } => {
            let mut build = cargo();
            build.args([
                "build",
                "--release",
                "--package",
                "koop-cli",
                "--package",
                "koop-bench",
            ]);
            run(build)?;
            let target = std::env::var("CARGO_TARGET_DIR").map_or_else(
                |_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
                std::path::PathBuf::from,
            );
            let mut bench = Command::new(target.join("release/koop-bench"));
            bench.args(args);
            run(bench)
        }
        Task::Demo { args } => {
            let mut demo = cargo();
            demo.args(["run", "--release", "--package", "koop-cli", "--", "demo"]);
            demo.args(args);
            run(demo)
        }
    }
}
