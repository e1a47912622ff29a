//! Test layers: what the fake server knows and serves.

use std::time::Duration;

use bytes::Bytes;

use crate::data;
use crate::geopackage::GeneratedContent;

/// What a layer holds, as the API's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Features with geometry; exported as GeoPackage.
    Vector,
    /// Imagery; exported as GeoTIFF tiles.
    Raster,
    /// A value grid (DEM); exported as GeoTIFF.
    Grid,
    /// Attributes only; served at `tables/{id}/`, exported as GeoPackage.
    Table,
    /// A LiDAR point cloud; cannot be exported as GeoPackage or GeoTIFF.
    PointCloud,
}

impl Kind {
    /// The API spelling (`vector`, `raster`, `grid`, `table`, `pointcloud`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vector => "vector",
            Self::Raster => "raster",
            Self::Grid => "grid",
            Self::Table => "table",
            Self::PointCloud => "pointcloud",
        }
    }

    /// The MIME type of the format a layer of this kind is exported in, if any.
    pub fn export_mime(self) -> Option<&'static str> {
        match self {
            Self::Vector | Self::Table => Some(GEOPACKAGE_MIME),
            Self::Raster | Self::Grid => Some(GEOTIFF_MIME),
            Self::PointCloud => None,
        }
    }
}

/// MIME type of GeoPackage exports.
pub const GEOPACKAGE_MIME: &str = "application/x-ogc-gpkg";
/// MIME type of GeoTIFF exports.
pub const GEOTIFF_MIME: &str = "image/tiff;subtype=geotiff";

/// Which API generation's body shape a layer is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiGeneration {
    /// v1.x: `title`, CRS object, `version` with `data_import`, `data.import_version`,
    /// `data.export_formats`.
    #[default]
    V1x,
    /// v1: `name`, CRS string, no `version` object, no `import_version`, no `export_formats`.
    V1,
}

/// The data of a layer.
#[derive(Debug, Clone)]
pub enum LayerContent {
    /// A GeoPackage, as bytes.
    GeoPackage(Bytes),
    /// GeoTIFF tiles, `(file name, bytes)`; one tile or a mosaic of many.
    GeoTiff(Vec<(String, Bytes)>),
    /// A GeoPackage generated at the layer's first export (seeded by layer and version, so a data
    /// version bump gives new content).
    Generated(GeneratedContent),
    /// No exportable data (point clouds).
    Nothing,
}

/// A layer of the fake server.
#[derive(Debug, Clone)]
pub struct TestLayer {
    /// Layer id.
    pub id: u64,
    /// Title (served as `title`, or `name` in v1 shape).
    pub title: String,
    /// Plain-text description.
    pub description: String,
    /// What the layer holds.
    pub kind: Kind,
    /// Its data.
    pub content: LayerContent,
    /// How long an export of it stays `processing`.
    pub export_latency: Duration,
    /// Body shape of its details.
    pub api_generation: ApiGeneration,
    /// Tags (served as `tags` and as repeated `dc:subject`).
    pub tags: Vec<String>,
    /// Whether it has a Dublin Core document (`metadata.dc`).
    pub dublin_core: bool,
    /// Whether its details advertise Koordinates' WFS changeset service (`wfs-changesets`) and
    /// the server answers changeset requests for it (generated point layers and tables only).
    pub changesets: bool,
}

impl TestLayer {
    fn new(id: u64, title: &str, kind: Kind, content: LayerContent) -> Self {
        Self {
            id,
            title: title.to_owned(),
            description: format!("{title}, served by koop-testkit."),
            kind,
            content,
            export_latency: Duration::ZERO,
            api_generation: ApiGeneration::V1x,
            tags: vec!["New Zealand".to_owned(), "test".to_owned()],
            dublin_core: true,
            changesets: false,
        }
    }

    /// A vector layer with a GeoPackage's content.
    pub fn vector(id: u64, title: &str, geopackage: impl Into<Bytes>) -> Self {
        Self::new(
            id,
            title,
            Kind::Vector,
            LayerContent::GeoPackage(geopackage.into()),
        )
    }

    /// A vector or table layer whose GeoPackage is generated at its first export.
    pub fn generated(id: u64, title: &str, content: GeneratedContent) -> Self {
        let kind = if matches!(content, GeneratedContent::Table { .. }) {
            Kind::Table
        } else {
            Kind::Vector
        };
        Self::new(id, title, kind, LayerContent::Generated(content))
    }

    /// A grid layer of one GeoTIFF.
    pub fn grid(id: u64, title: &str, file_name: &str, tiff: impl Into<Bytes>) -> Self {
        Self::new(
            id,
            title,
            Kind::Grid,
            LayerContent::GeoTiff(vec![(file_name.to_owned(), tiff.into())]),
        )
    }

    /// A raster layer of several GeoTIFF tiles.
    pub fn raster(id: u64, title: &str, tiles: Vec<(String, Bytes)>) -> Self {
        Self::new(id, title, Kind::Raster, LayerContent::GeoTiff(tiles))
    }

    /// A point cloud, which the Exports API cannot deliver as GeoPackage or GeoTIFF.
    pub fn point_cloud(id: u64, title: &str) -> Self {
        Self::new(id, title, Kind::PointCloud, LayerContent::Nothing)
    }

    /// Sets how long its exports stay `processing`.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.export_latency = latency;
        self
    }

    /// Sets the description.
    #[must_use]
    pub fn with_description(mut self, description: &str) -> Self {
        description.clone_into(&mut self.description);
        self
    }

    /// Serves its details in the v1 or v1.x shape.
    #[must_use]
    pub fn with_api_generation(mut self, generation: ApiGeneration) -> Self {
        self.api_generation = generation;
        self
    }

    /// Advertises the WFS changeset service and answers its requests (for generated point
    /// layers and tables; see [`crate::BumpKind::Edit`]).
    #[must_use]
    pub fn with_changesets(mut self) -> Self {
        self.changesets = true;
        self
    }

    /// Removes its Dublin Core document.
    #[must_use]
    pub fn without_dublin_core(mut self) -> Self {
        self.dublin_core = false;
        self
    }
}

/// Ids of the demo layers that can be exported (every demo layer but the point cloud).
pub const DEMO_LAYER_IDS: [u64; 6] = [1001, 1002, 1003, 1004, 1005, 1006];

/// The built-in catalog: real Natural Earth data as vector, grid and raster layers, a generated
/// table and point layer, and a point cloud; export latencies from 0.5 s to 3 s.
pub fn demo_layers() -> Vec<TestLayer> {
    vec![
        TestLayer::vector(1001, "World Countries (Natural Earth 1:110m)", data::WORLD_COUNTRIES_GPKG)
            .with_latency(Duration::from_millis(1000))
            .with_description("Admin-0 countries of the world at 1:110m, from Natural Earth (public domain)."),
        TestLayer::vector(1002, "NZ Islands — Te Ika-a-Māui & Te Waipounamu", data::NZ_ISLANDS_GPKG)
            .with_latency(Duration::from_millis(2000))
            .with_description(
                "Land polygons of Aotearoa <New Zealand> at 1:10m: \"islands\" & 'coast', from Natural Earth (public domain).",
            ),
        TestLayer::grid(1003, "NZ Distance to Coast (4 km grid)", "nz_coast_distance.tif", data::NZ_COAST_DISTANCE_TIF)
            .with_latency(Duration::from_millis(1500))
            .with_description("Distance to the coast in metres on a 4 km grid (Float32)."),
        TestLayer::raster(
            1004,
            "NZ Shaded Relief (2 × 2 tiles)",
            data::NZ_RELIEF_TILES
                .iter()
                .map(|(name, bytes)| ((*name).to_owned(), Bytes::from_static(bytes)))
                .collect(),
        )
        .with_latency(Duration::from_millis(2500))
        .with_description("RGB shaded relief of New Zealand delivered as a mosaic of four GeoTIFF tiles."),
        TestLayer::generated(1005, "NZ Locality Population (sample)", GeneratedContent::Table { rows: 3190 })
            .with_latency(Duration::from_millis(500))
            .with_description("Population estimates per suburb/locality (generated sample table)."),
        TestLayer::generated(1006, "NZ Survey Points (generated)", GeneratedContent::Points { count: 20_000 })
            .with_latency(Duration::from_millis(3000))
            .with_description("Twenty thousand survey points across New Zealand (generated)."),
        TestLayer::point_cloud(1007, "Canterbury LiDAR Point Cloud (not exportable)")
            .with_description("A point cloud: Koordinates does not export these as GeoPackage or GeoTIFF."),
    ]
}
