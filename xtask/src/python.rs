//! The Python package `koop-rs` (crates/koop-py): its wheel, built by maturin, and its pytest
//! suite, run in a fresh virtual environment with the wheel installed as a user would.
//!
//! Both virtual environments live under `target/xtask/`: `pybuild` holds the build tools
//! (maturin, pytest's wheel cache), `pytest` is made anew for every run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::tools;

/// The build tools' requirements.
const BUILD_TOOLS: &[&str] = &["maturin>=1.9,<2", "pytest>=8"];

fn crate_dir(root: &Path) -> PathBuf {
    root.join("crates/koop-py")
}

/// A virtual environment at `dir` (made with `python3 -m venv`, `--clear` when `fresh`).
fn venv(dir: &Path, fresh: bool) -> Result<PathBuf> {
    let python = dir.join("bin/python");
    if fresh || !python.exists() {
        let mut make = Command::new("python3");
        make.args(["-m", "venv"]);
        if fresh {
            make.arg("--clear");
        }
        make.arg(dir);
        crate::run(make).context(
            "python3 -m venv failed; install Python 3 with venv (apt-get install -y python3-venv)",
        )?;
    }
    Ok(python)
}

fn pip_install(python: &Path, requirements: &[&str]) -> Result<()> {
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    pip.args(requirements);
    crate::run(pip)
}

/// The build tools' environment, with maturin and pytest installed once.
fn build_tools(root: &Path) -> Result<PathBuf> {
    let python = venv(&tools::home(root).join("pybuild"), false)?;
    let has_maturin = Command::new(&python)
        .args(["-m", "maturin", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !has_maturin {
        pip_install(&python, BUILD_TOOLS)?;
    }
    Ok(python)
}

/// Builds the wheel (release or dev profile) into `target/wheels/{profile}` and returns its
/// path.
pub(crate) fn wheel(root: &Path, release: bool) -> Result<PathBuf> {
    let python = build_tools(root)?;
    let profile = if release { "release" } else { "dev" };
    let out = tools::home(root)
        .parent()
        .map_or_else(|| root.join("target"), Path::to_owned)
        .join("wheels")
        .join(profile);
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    let mut build = Command::new(&python);
    build
        .current_dir(crate_dir(root))
        .args(["-m", "maturin", "build", "--quiet", "--interpreter"])
        .arg(&python)
        .arg("--out")
        .arg(&out);
    if release {
        build.arg("--release");
    }
    crate::run(build)?;
    let wheel = std::fs::read_dir(&out)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"));
    match wheel {
        Some(wheel) => Ok(wheel),
        None => bail!("maturin built no wheel into {}", out.display()),
    }
}

/// Builds the wheel, installs it into a fresh virtual environment and runs the pytest suite
/// against `koop testkit-server` (the debug `koop` binary).
pub(crate) fn test(root: &Path, koop_bin: &Path) -> Result<()> {
    let wheel = wheel(root, false)?;
    let python = venv(&tools::home(root).join("pytest"), true)?;
    let wheel_text = wheel.to_string_lossy().into_owned();
    pip_install(&python, &["pytest>=8", &wheel_text])?;
    let mut pytest = Command::new(&python);
    pytest
        .current_dir(crate_dir(root))
        .env("KOOP_BIN", koop_bin)
        .env("PATH", tools::search_path(root))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]);
    crate::run(pytest)
}
