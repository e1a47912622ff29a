//! Object ids of features whose provider names no `idField`.
//!
//! ArcGIS clients need an integer id in 0..=2,147,483,647 for every feature. When the provider
//! names none, koop computes one from the feature itself:
//!
//! 1. serialize the array `[properties, geometry]` as compact JSON (`serde_json`: keys in the
//!    provider's order, no spaces, shortest round-trip numbers);
//! 2. hash those UTF-8 bytes with 32-bit FNV-1a (offset basis `0x811C9DC5`, prime `0x01000193`);
//! 3. clear the top bit.
//!
//! The id depends only on the feature, so it is the same on every machine, in every run, on
//! every page. Like any 31-bit hash it can collide (about n²/2³² pairs among n features, so
//! around 230 for a million features): providers of large layers should name an `idField`.

use std::io::Write;

/// FNV-1a, 32 bits, fed through `io::Write`.
struct Fnv1a(u32);

impl Write for Fnv1a {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        for byte in bytes {
            self.0 ^= u32::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The computed object id of `feature`, in 0..=2,147,483,647 (see the module documentation).
pub(crate) fn feature_hash(feature: &geojson::Feature) -> i64 {
    let mut hasher = Fnv1a(0x811C_9DC5);
    // Writing into the hasher cannot fail, and neither can serializing JSON values.
    let _ = serde_json::to_writer(&mut hasher, &(&feature.properties, &feature.geometry));
    i64::from(hasher.0 & 0x7FFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(json: &str) -> geojson::Feature {
        serde_json::from_str(json).expect("a feature")
    }

    #[test]
    fn the_hash_is_fnv1a_of_compact_json() {
        let auckland = feature(
            r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[174.7633,-36.8485]},"properties":{"fid":1,"name":"Auckland"}}"#,
        );
        let text =
            r#"[{"fid":1,"name":"Auckland"},{"type":"Point","coordinates":[174.7633,-36.8485]}]"#;
        let mut expected: u32 = 0x811C_9DC5;
        for byte in text.bytes() {
            expected = (expected ^ u32::from(byte)).wrapping_mul(16_777_619);
        }
        assert_eq!(feature_hash(&auckland), i64::from(expected & 0x7FFF_FFFF));
        // Pinned (computed independently): the same id on every machine and in every release.
        assert_eq!(feature_hash(&auckland), 176_693_464);
        let renamed = feature(
            r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[174.7633,-36.8485]},"properties":{"fid":1,"name":"Tāmaki Makaurau"}}"#,
        );
        assert_ne!(feature_hash(&auckland), feature_hash(&renamed));
        assert!((0..=i64::from(i32::MAX)).contains(&feature_hash(&renamed)));
    }
}
