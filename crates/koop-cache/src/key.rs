//! Entry keys: what makes two cached files differ.

use koop_types::{Domain, Epsg};
use serde::{Deserialize, Serialize};

/// Identifies one cache entry: a layer's data at one version, in one format, CRS and extent,
/// from one Koordinates domain.
///
/// The entry is named `{layer_id}_{version_id}_{fingerprint}`. The fingerprint is the first 16
/// hex digits of BLAKE3 over the domain, the layer id, the *data* version, the format, the CRS and
/// the extent: everything that changes the bytes. It does not cover the version id, because a
/// version that changed only metadata has the same data: its entry has a new name but the same
/// fingerprint, so the cache can point it at the bytes it already holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntryKey {
    /// Koordinates domain, e.g. `data.linz.govt.nz`.
    pub domain: Domain,
    /// Layer id.
    pub layer_id: u64,
    /// The layer version the entry is filed under.
    pub version_id: u64,
    /// The version whose data the layer version carries (`data.import_version`; equal to
    /// `version_id` unless the version changed only metadata).
    pub data_version: u64,
    /// Export format MIME type, e.g. `application/x-ogc-gpkg`.
    pub format: String,
    /// Output CRS, written `EPSG:2193`.
    pub crs: Epsg,
    /// Crop extent as compact JSON (a GeoJSON geometry), if any.
    pub extent: Option<String>,
}

impl EntryKey {
    /// 16 hex digits of BLAKE3 over domain, layer id, data version, format, CRS and extent.
    pub fn fingerprint(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        for part in [
            "koop-cache/1",
            self.domain.as_str(),
            &self.layer_id.to_string(),
            &self.data_version.to_string(),
            &self.format,
            &self.crs.to_string(),
            self.extent.as_deref().unwrap_or(""),
        ] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.finalize().to_hex()[..16].to_owned()
    }

    /// `{layer_id}_{version_id}_{fingerprint}`: the name of the entry without extension.
    pub fn stem(&self) -> String {
        format!(
            "{}_{}_{}",
            self.layer_id,
            self.version_id,
            self.fingerprint()
        )
    }

    /// `{layer_id}_{fingerprint}`: shared by every version with the same data, and so the name
    /// of the lock that serialises fetching that data.
    pub fn data_name(&self) -> String {
        format!("{}_{}", self.layer_id, self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BLAKE3 of the test key's parts, computed outside koop (Python's `blake3` package).
    const PINNED_FINGERPRINT: &str = "2a2db4c39e86558a";

    fn key() -> EntryKey {
        EntryKey {
            domain: Domain::parse("data.linz.govt.nz").expect("a domain"),
            layer_id: 50772,
            version_id: 400_001,
            data_version: 400_001,
            format: "application/x-ogc-gpkg".into(),
            crs: Epsg::NZTM2000,
            extent: None,
        }
    }

    #[test]
    fn the_fingerprint_covers_data_not_the_version_id() {
        let base = key();
        let metadata_only = EntryKey {
            version_id: 400_002,
            ..base.clone()
        };
        assert_eq!(base.fingerprint(), metadata_only.fingerprint());
        assert_ne!(base.stem(), metadata_only.stem());
        assert_eq!(base.data_name(), metadata_only.data_name());
        for changed in [
            EntryKey {
                data_version: 400_002,
                ..base.clone()
            },
            EntryKey {
                domain: Domain::parse("ttgroup.koordinates.com").expect("a domain"),
                ..base.clone()
            },
            EntryKey {
                crs: Epsg::WGS84,
                ..base.clone()
            },
            EntryKey {
                format: "image/tiff;subtype=geotiff".into(),
                ..base.clone()
            },
            EntryKey {
                extent: Some("{}".into()),
                ..base.clone()
            },
        ] {
            assert_ne!(base.fingerprint(), changed.fingerprint(), "{changed:?}");
        }
        assert_eq!(base.stem(), format!("50772_400001_{}", base.fingerprint()));
        assert_eq!(base.fingerprint().len(), 16);
        // Pinned: entries written before the domain and CRS had their own types keep their names.
        assert_eq!(base.fingerprint(), PINNED_FINGERPRINT);
    }
}
