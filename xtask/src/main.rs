//! Maintenance tasks for the koop workspace: `cargo xtask <task>`.
//!
//! - `test`: every test, after checking (and where it can, installing) the programs they run:
//!   `cargo nextest run` (or `cargo test` without nextest), the doctests, then the Python
//!   package's pytest suite on its wheel (`python.rs`).
//! - `ci`: what CI runs after installing system packages: fmt, clippy (`-D warnings`),
//!   `cargo deny check`, tidy, then `test`.
//! - `tidy`: the workspace's own rules (crate boundaries, no test code in libraries, a repository
//!   complete on its own, crate docs); see `tidy.rs`.
//! - `demo`: the main job on the built-in demo (the bundled test server and its layers).
//! - `bench`: the benchmarks, in release mode (`crates/koop-bench`).
//!
//! xtask depends on anyhow and clap, as rust-analyzer's does, and on `serde_json` to read
//! `cargo metadata`.

mod python;
mod tidy;
mod tools;

use std::path::{Path, PathBuf};
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
    /// Run every test: checks the programs the tests use, then nextest (or cargo test) over the
    /// workspace, then the doctests.
    Test,
    /// Check formatting, lints, dependencies (cargo-deny) and the workspace rules, then run every
    /// test.
    Ci,
    /// Check the workspace's rules: crate boundaries, no test code in libraries, no reference to
    /// files outside the repository, crate documentation.
    Tidy,
    /// Run the benchmarks (release build); all by default.
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

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// Set by `ci`: every cargo it runs builds without incremental state.
static NOT_INCREMENTAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.current_dir(root());
    if NOT_INCREMENTAL.load(std::sync::atomic::Ordering::Relaxed) {
        command.env("CARGO_INCREMENTAL", "0");
    }
    command
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

fn has_cargo_subcommand(name: &str) -> bool {
    cargo()
        .args([name, "--version"])
        .output()
        .is_ok_and(|output| output.status.success())
}

fn test() -> Result<()> {
    let root = root();
    tools::ensure(&root)?;
    let path = tools::search_path(&root);
    let mut tests = cargo();
    tests.env("PATH", &path);
    if has_cargo_subcommand("nextest") {
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
    doctests.env("PATH", &path);
    doctests.args(["test", "--workspace", "--doc"]);
    run(doctests)?;
    // The pytest suite runs koop's test server as a process: the debug `koop` binary.
    let mut koop = cargo();
    koop.args(["build", "--package", "koop-cli"]);
    run(koop)?;
    python::test(&root, &target_dir().join("debug/koop"))
}

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root().join("target"), PathBuf::from)
}

fn ci() -> Result<()> {
    // CI builds once on a clean checkout: incremental state would only take disk (tens of GB here).
    NOT_INCREMENTAL.store(true, std::sync::atomic::Ordering::Relaxed);
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
    if !has_cargo_subcommand("deny") {
        bail!("cargo-deny is not installed: cargo install --locked cargo-deny (.ci/run does this)");
    }
    let mut deny = cargo();
    // Advisories need a database download, which this network does not allow.
    deny.args(["deny", "--locked", "check", "bans", "licenses", "sources"]);
    run(deny)?;
    tidy::run(&root())?;
    test()
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Test => test(),
        Task::Ci => ci(),
        Task::Tidy => tidy::run(&root()),
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
            let target = target_dir();
            let mut bench = Command::new(target.join("release/koop-bench"));
            // Where the benchmarks install their own tools (oha, the reference Koop, Python
            // environments).
            bench.env("KOOP_BENCH_TOOLS", target.join("xtask"));
            let named: Vec<&String> = args.iter().filter(|arg| !arg.starts_with('-')).collect();
            if named.is_empty() || named.iter().any(|arg| *arg == "python") {
                bench.env("KOOP_BENCH_WHEEL", python::wheel(&root(), true)?);
            }
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
