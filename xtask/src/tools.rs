//! The programs outside Rust that the tests run, and how a newcomer gets them.
//!
//! `cargo xtask test` checks each before running anything: what can be installed without root is
//! installed under `target/xtask/` (PyPI packages into a virtual environment, npm packages into
//! a prefix), and the tests find them through `PATH`; what needs the system package manager stops
//! the run with one line naming the package and the command. `.ci/run` installs the system
//! packages itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Where a tool comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// A system package: its Debian and Homebrew names.
    System {
        debian: &'static str,
        brew: &'static str,
    },
    /// A PyPI package (a requirement such as `esridump==1.13.0`), installed into the
    /// virtual environment.
    Python { requirement: &'static str },
}

/// A program the tests run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    /// The command, as the tests call it.
    pub(crate) command: &'static str,
    /// Arguments that make it print its version and exit 0.
    pub(crate) probe: &'static [&'static str],
    /// Where it comes from.
    pub(crate) source: Source,
}

/// Every program the test suites run.
pub(crate) const TOOLS: &[Tool] = &[
    Tool {
        command: "ogrinfo",
        probe: &["--version"],
        source: Source::System {
            debian: "gdal-bin",
            brew: "gdal",
        },
    },
    Tool {
        command: "ogr2ogr",
        probe: &["--version"],
        source: Source::System {
            debian: "gdal-bin",
            brew: "gdal",
        },
    },
    Tool {
        command: "gdalinfo",
        probe: &["--version"],
        source: Source::System {
            debian: "gdal-bin",
            brew: "gdal",
        },
    },
    Tool {
        command: "esri2geojson",
        probe: &["--help"],
        source: Source::Python {
            requirement: "esridump==1.13.0",
        },
    },
    Tool {
        command: "moto_server",
        probe: &["--help"],
        source: Source::Python {
            requirement: "moto[server]==5.2.5",
        },
    },
    Tool {
        command: "chromium",
        probe: &["--version"],
        source: Source::System {
            debian: "chromium",
            brew: "chromium",
        },
    },
    Tool {
        command: "tmux",
        probe: &["-V"],
        source: Source::System {
            debian: "tmux",
            brew: "tmux",
        },
    },
    Tool {
        command: "xmllint",
        probe: &["--version"],
        source: Source::System {
            debian: "libxml2-utils",
            brew: "libxml2",
        },
    },
];

/// The folder xtask installs into: `target/xtask`.
pub(crate) fn home(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("xtask")
}

/// The virtual environment's `bin` folder.
pub(crate) fn venv_bin(root: &Path) -> PathBuf {
    home(root).join("venv").join("bin")
}

fn runs(command: &Path, args: &[&str]) -> bool {
    Command::new(command)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `PATH` with the virtual environment first.
pub(crate) fn search_path(root: &Path) -> std::ffi::OsString {
    let mut paths = vec![venv_bin(root)];
    if let Some(path) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

fn found(root: &Path, tool: &Tool) -> bool {
    let in_venv = venv_bin(root).join(tool.command);
    runs(&in_venv, tool.probe) || runs(Path::new(tool.command), tool.probe)
}

fn install_python(root: &Path, requirements: &[&str]) -> Result<()> {
    let venv = home(root).join("venv");
    if !venv.join("bin/python").exists() {
        eprintln!(
            "xtask: creating a Python virtual environment in {}",
            venv.display()
        );
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("running python3 -m venv (install Python 3 with its venv module)")?;
        if !status.success() {
            bail!(
                "python3 -m venv failed; install Python 3 with venv (apt-get install -y python3-venv)"
            );
        }
    }
    eprintln!("xtask: pip install {}", requirements.join(" "));
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(requirements)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("pip install {} failed", requirements.join(" "));
    }
    Ok(())
}

/// Makes sure every tool runs: installs the Python ones, and fails with one line per missing
/// system package.
pub(crate) fn ensure(root: &Path) -> Result<()> {
    let python: Vec<&str> = TOOLS
        .iter()
        .filter(|tool| !found(root, tool))
        .filter_map(|tool| match tool.source {
            Source::Python { requirement } => Some(requirement),
            Source::System { .. } => None,
        })
        .collect();
    if !python.is_empty() {
        install_python(root, &python)?;
    }
    let mut debian: Vec<&str> = Vec::new();
    let mut brew: Vec<&str> = Vec::new();
    let mut missing: Vec<&str> = Vec::new();
    for tool in TOOLS.iter().filter(|tool| !found(root, tool)) {
        missing.push(tool.command);
        if let Source::System {
            debian: package,
            brew: formula,
        } = tool.source
        {
            if !debian.contains(&package) {
                debian.push(package);
            }
            if !brew.contains(&formula) {
                brew.push(formula);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "the tests need {} and this machine lacks them: apt-get install -y {} (on macOS: brew install {})",
        missing.join(", "),
        debian.join(" "),
        brew.join(" ")
    )
}
