//! `cargo xtask tidy`: the rules of the workspace that the compiler does not keep.
//!
//! 1. The server knows no data source: `koop-server`, `koop-featureserver` and `koop-auth` have no normal
//!    dependency, direct or transitive, on `koop`, `koop-api`, `reqwest` or `rusqlite`.
//! 2. Test code stays test code: no library crate depends on `koop-testkit` outside
//!    dev-dependencies (binaries such as `koop-cli`, whose `koop demo` runs the test server, may).
//! 3. The repository is complete on its own: no tracked file refers to the project's shared folder
//!    beside the repository (a user's clone has no such folder).
//! 4. Every library crate's `lib.rs` opens with its documentation (`//!`) and denies missing docs.
//! 5. The Python bindings are bindings: `koop-py` depends, among the workspace's crates, on the
//!    facade `koop` alone (what Python users get is what Rust users embed).
//! 6. The jobs are separate: `koop-export`, `koop-changeset`, `koop-metadata` and `koop-cache` have no
//!    normal dependency, direct or transitive, on one another (the facade joins them), and the
//!    cache none on `koop-api` or `reqwest` (it knows no HTTP).
//!
//! The dependency rules read `cargo metadata`; the checks are plain functions so tests can feed
//! them a workspace that breaks them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Crates that must not reach a data source.
const SERVER_CRATES: [&str; 3] = ["koop-server", "koop-featureserver", "koop-auth"];
/// What the server crates must not depend on.
const DATA_SOURCE_CRATES: [&str; 4] = ["koop", "koop-api", "reqwest", "rusqlite"];
/// The crate that is for tests only.
const TESTKIT: &str = "koop-testkit";
/// The job crates, which the facade alone joins.
const JOB_CRATES: [&str; 4] = [
    "koop-export",
    "koop-changeset",
    "koop-metadata",
    "koop-cache",
];
/// What the cache must not depend on.
const HTTP_CRATES: [&str; 2] = ["koop-api", "reqwest"];
/// The Python bindings, and the one workspace crate they may depend on.
const BINDINGS: (&str, &str) = ("koop-py", "koop");

/// A package of the metadata: name, whether it has a library target, and its workspace-ness.
#[derive(Debug, Clone)]
struct Package {
    name: String,
    has_lib: bool,
    member: bool,
    manifest: String,
}

/// The dependency graph of a `cargo metadata` document: package id → (dependency id, normal?).
struct Graph {
    packages: BTreeMap<String, Package>,
    edges: BTreeMap<String, Vec<(String, bool)>>,
}

impl Graph {
    fn from_metadata(metadata: &Value) -> Result<Self> {
        let members: BTreeSet<&str> = metadata["workspace_members"]
            .as_array()
            .context("workspace_members")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut packages = BTreeMap::new();
        for package in metadata["packages"].as_array().context("packages")? {
            let id = package["id"].as_str().context("package id")?.to_owned();
            let has_lib = package["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|target| {
                    target["kind"].as_array().is_some_and(|kinds| {
                        kinds
                            .iter()
                            .any(|kind| matches!(kind.as_str(), Some("lib" | "rlib" | "cdylib")))
                    })
                });
            packages.insert(
                id.clone(),
                Package {
                    name: package["name"].as_str().context("name")?.to_owned(),
                    has_lib,
                    member: members.contains(id.as_str()),
                    manifest: package["manifest_path"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                },
            );
        }
        let mut edges = BTreeMap::new();
        for node in metadata["resolve"]["nodes"]
            .as_array()
            .context("resolve.nodes")?
        {
            let id = node["id"].as_str().context("node id")?.to_owned();
            let deps = node["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|dep| {
                    let pkg = dep["pkg"].as_str()?.to_owned();
                    let normal = dep["dep_kinds"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|kind| kind["kind"].is_null()));
                    Some((pkg, normal))
                })
                .collect();
            edges.insert(id, deps);
        }
        Ok(Self { packages, edges })
    }

    fn name<'a>(&'a self, id: &'a str) -> &'a str {
        self.packages.get(id).map_or(id, |package| &package.name)
    }

    /// Every package reached from `start` through normal dependencies, with the path to it.
    fn normal_closure(&self, start: &str) -> BTreeMap<String, Vec<String>> {
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut queue = VecDeque::from([(start.to_owned(), vec![self.name(start).to_owned()])]);
        while let Some((id, path)) = queue.pop_front() {
            for (dep, normal) in self.edges.get(&id).into_iter().flatten() {
                if !normal || seen.contains_key(dep) {
                    continue;
                }
                let mut next = path.clone();
                next.push(self.name(dep).to_owned());
                seen.insert(dep.clone(), next.clone());
                queue.push_back((dep.clone(), next));
            }
        }
        seen
    }
}

/// The violations of rules 1, 2, 4 and 5 in a `cargo metadata` document (with `resolve`).
pub(crate) fn check_metadata(metadata: &Value) -> Result<Vec<String>> {
    let graph = Graph::from_metadata(metadata)?;
    let mut problems = Vec::new();
    for (id, package) in &graph.packages {
        if !package.member {
            continue;
        }
        if SERVER_CRATES.contains(&package.name.as_str()) {
            for (dep, path) in graph.normal_closure(id) {
                if DATA_SOURCE_CRATES.contains(&graph.name(&dep)) {
                    problems.push(format!(
                        "{} must know no data source, but depends on {} ({}); move the code that needs it into a provider crate",
                        package.name,
                        graph.name(&dep),
                        path.join(" → ")
                    ));
                }
            }
        }
        if JOB_CRATES.contains(&package.name.as_str()) {
            for (dep, path) in graph.normal_closure(id) {
                let name = graph.name(&dep);
                if JOB_CRATES.contains(&name) && name != package.name {
                    problems.push(format!(
                        "the job crate {} depends on the job crate {name} ({}); let the facade koop join them",
                        package.name,
                        path.join(" → ")
                    ));
                }
                if package.name == "koop-cache" && HTTP_CRATES.contains(&name) {
                    problems.push(format!(
                        "koop-cache must know no HTTP, but depends on {name} ({})",
                        path.join(" → ")
                    ));
                }
            }
        }
        if package.name == BINDINGS.0 {
            for (dep, normal) in graph.edges.get(id).into_iter().flatten() {
                let member = graph.packages.get(dep).is_some_and(|dep| dep.member);
                if *normal && member && graph.name(dep) != BINDINGS.1 {
                    problems.push(format!(
                        "{} depends on {}; the Python bindings use the facade {} alone (add what they need there)",
                        BINDINGS.0,
                        graph.name(dep),
                        BINDINGS.1
                    ));
                }
            }
        }
        if package.has_lib && package.name != TESTKIT {
            for (dep, normal) in graph.edges.get(id).into_iter().flatten() {
                if *normal && graph.name(dep) == TESTKIT {
                    problems.push(format!(
                        "the library crate {} depends on {TESTKIT} outside dev-dependencies; test code must not ship",
                        package.name
                    ));
                }
            }
            if let Some(problem) = lib_docs_problem(&package.name, &package.manifest) {
                problems.push(problem);
            }
        }
    }
    Ok(problems)
}

/// Rule 4 for one crate: its `lib.rs` starts with `//!` and holds `#![deny(missing_docs)]`.
fn lib_docs_problem(name: &str, manifest: &str) -> Option<String> {
    let lib = Path::new(manifest).parent()?.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).ok()?;
    if !text.trim_start().starts_with("//!") {
        return Some(format!(
            "{name}: src/lib.rs must open with its documentation (//!)"
        ));
    }
    if !text.contains("#![deny(missing_docs)]") {
        return Some(format!("{name}: src/lib.rs must deny missing docs"));
    }
    None
}

/// Rule 3: tracked files that point at the shared folder beside the repository.
pub(crate) fn check_files(root: &Path, files: &[String]) -> Vec<String> {
    let needles = [["..", "shared"].join("/"), ["shared", "fixtures"].join("/")];
    let mut problems = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            continue;
        };
        if let Some(needle) = needles.iter().find(|needle| text.contains(needle.as_str())) {
            problems.push(format!(
                "{file} refers to {needle}, which a clone does not have; copy what it needs into crates/koop-testkit/fixtures"
            ));
        }
    }
    problems
}

fn metadata(root: &Path) -> Result<Value> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("reading cargo metadata")
}

/// The files git tracks; outside a git checkout, every file but `target/` and `.git/`.
fn tracked_files(root: &Path) -> Result<Vec<String>> {
    let output = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output();
    if let Ok(output) = output
        && output.status.success()
    {
        return Ok(output
            .stdout
            .split(|byte| *byte == 0)
            .filter(|name| !name.is_empty())
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect());
    }
    let mut files = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if !matches!(name, "target" | ".git") {
                    dirs.push(path);
                }
            } else if let Ok(relative) = path.strip_prefix(root) {
                files.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    Ok(files)
}

/// Runs every check on the workspace at `root`.
pub(crate) fn run(root: &Path) -> Result<()> {
    let mut problems = check_metadata(&metadata(root)?)?;
    problems.extend(check_files(root, &tracked_files(root)?));
    if problems.is_empty() {
        eprintln!("xtask tidy: the workspace keeps its rules");
        return Ok(());
    }
    for problem in &problems {
        eprintln!("tidy: {problem}");
    }
    bail!("{} tidy rule(s) broken", problems.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workspace_root() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
    }

    fn dep(pkg: &str, kind: Option<&str>) -> Value {
        json!({"name": pkg, "pkg": pkg, "dep_kinds": [{"kind": kind, "target": null}]})
    }

    fn package(name: &str, lib: bool) -> Value {
        json!({
            "id": name,
            "name": name,
            "manifest_path": format!("/nowhere/{name}/Cargo.toml"),
            "targets": [{"kind": [if lib { "lib" } else { "bin" }]}],
        })
    }

    /// A workspace shaped like koop's: the server on the provider model, the Koordinates
    /// provider on `koop`, the CLI on everything and on the testkit.
    fn workspace(extra: &[(&str, &str, Option<&str>)]) -> Value {
        let mut edges: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for (from, to, kind) in [
            ("koop-server", "koop-provider", None),
            ("koop-server", "koop-testkit", Some("dev")),
            ("koop-server", "koop-provider-koordinates", Some("dev")),
            ("koop-featureserver", "koop-server", None),
            ("koop-provider-koordinates", "koop", None),
            ("koop", "koop-api", None),
            ("koop-api", "reqwest", None),
            ("koop-cli", "koop-testkit", None),
            ("koop-py", "koop", None),
            ("koop", "koop-changeset", None),
            ("koop", "koop-cache", None),
            ("koop-changeset", "koop-api", None),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            edges.entry(from).or_default().push(dep(to, kind));
        }
        let names = [
            "koop-server",
            "koop-featureserver",
            "koop-provider",
            "koop-provider-koordinates",
            "koop",
            "koop-api",
            "reqwest",
            "koop-testkit",
            "koop-cli",
            "koop-py",
            "koop-changeset",
            "koop-cache",
        ];
        json!({
            "packages": names.iter().map(|name| package(name, *name != "koop-cli")).collect::<Vec<_>>(),
            "workspace_members": names.iter().filter(|name| **name != "reqwest").collect::<Vec<_>>(),
            "resolve": {"nodes": names.iter().map(|name| json!({
                "id": name,
                "deps": edges.get(name).cloned().unwrap_or_default(),
            })).collect::<Vec<_>>()},
        })
    }

    #[test]
    fn the_rules_hold_for_a_well_formed_workspace() -> Result<()> {
        assert_eq!(check_metadata(&workspace(&[]))?, Vec::<String>::new());
        Ok(())
    }

    #[test]
    fn a_server_crate_that_gains_a_data_source_is_refused() -> Result<()> {
        let problems = check_metadata(&workspace(&[(
            "koop-featureserver",
            "koop-provider-koordinates",
            None,
        )]))?;
        assert!(
            problems.iter().any(|problem| problem
                .contains("koop-featureserver must know no data source, but depends on reqwest")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|problem| problem.contains("koop-provider-koordinates → koop → koop-api")),
            "{problems:?}"
        );
        let problems = check_metadata(&workspace(&[("koop-provider", "rusqlite", None)]))?;
        assert!(
            problems.iter().any(|problem| problem
                .contains("koop-server must know no data source, but depends on rusqlite")),
            "{problems:?}"
        );
        Ok(())
    }

    #[test]
    fn bindings_that_reach_past_the_facade_are_refused() -> Result<()> {
        let problems = check_metadata(&workspace(&[("koop-py", "koop-api", None)]))?;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("koop-py depends on koop-api"));
        Ok(())
    }

    #[test]
    fn jobs_that_depend_on_each_other_or_a_cache_on_http_are_refused() -> Result<()> {
        let problems = check_metadata(&workspace(&[("koop-changeset", "koop-cache", None)]))?;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0]
                .contains("the job crate koop-changeset depends on the job crate koop-cache"),
            "{problems:?}"
        );
        let problems = check_metadata(&workspace(&[("koop-cache", "koop-api", None)]))?;
        assert!(
            problems
                .iter()
                .any(|problem| problem
                    .contains("koop-cache must know no HTTP, but depends on reqwest")),
            "{problems:?}"
        );
        Ok(())
    }

    #[test]
    fn a_library_on_the_testkit_is_refused() -> Result<()> {
        let problems = check_metadata(&workspace(&[("koop", "koop-testkit", None)]))?;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("the library crate koop depends on koop-testkit"));
        Ok(())
    }

    #[test]
    fn files_that_point_outside_the_repository_are_found() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let outside = ["..", "shared", "fixtures", "x.json"].join("/");
        std::fs::write(dir.join("bad.rs"), format!("let p = \"{outside}\";"))?;
        std::fs::write(
            dir.join("good.rs"),
            "let p = koop_testkit::fixtures::dir();",
        )?;
        let problems = check_files(&dir, &["bad.rs".to_owned(), "good.rs".to_owned()]);
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("bad.rs refers to"));
        Ok(())
    }

    #[test]
    fn this_workspace_keeps_its_rules() -> Result<()> {
        let root = workspace_root();
        assert_eq!(check_metadata(&metadata(root)?)?, Vec::<String>::new());
        assert_eq!(
            check_files(root, &tracked_files(root)?),
            Vec::<String>::new()
        );
        Ok(())
    }
}
