//! The repository's test fixtures (`crates/koop-testkit/fixtures/`): real Koordinates API bodies,
//! responses of a real Koop, and the Natural Earth geodata. See `fixtures/README.md` for each
//! file's origin and licence.

use std::path::{Path, PathBuf};

/// The fixtures folder: `koordinates/`, `koop-geoservices/` and `geodata/` are inside.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A fixture by its path inside the folder, e.g. `koordinates/exports__export_complete.json`.
pub fn path(relative: &str) -> PathBuf {
    dir().join(relative)
}

/// The Koordinates API response bodies.
pub fn koordinates() -> PathBuf {
    path("koordinates")
}

/// The responses captured from a real Koop, and `sample.geojson` they were made from.
pub fn koop_geoservices() -> PathBuf {
    path("koop-geoservices")
}
