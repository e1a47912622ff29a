//! The bundled real geodata (public-domain Natural Earth, see `fixtures/geodata/README.md`).

/// 1:110m admin-0 countries, 177 multipolygons, EPSG:4326.
pub const WORLD_COUNTRIES_GPKG: &[u8] = include_bytes!("../fixtures/geodata/ne_world_4326.gpkg");
/// 1:10m New Zealand islands, 16 multipolygons, EPSG:2193.
pub const NZ_ISLANDS_GPKG: &[u8] = include_bytes!("../fixtures/geodata/wa_nz10m_2193.gpkg");
/// Grid: distance to the coast in metres, 275 × 387 Float32 cells, EPSG:2193.
pub const NZ_COAST_DISTANCE_TIF: &[u8] =
    include_bytes!("../fixtures/geodata/nz_coastdist_grid_2193.tif");
/// Raster: RGB relief of New Zealand as a 2 × 2 mosaic, `(file name, bytes)` per tile.
pub const NZ_RELIEF_TILES: [(&str, &[u8]); 4] = [
    (
        "nz_relief_r0c0.tif",
        include_bytes!("../fixtures/geodata/nz_relief_tile_r0c0.tif"),
    ),
    (
        "nz_relief_r0c1.tif",
        include_bytes!("../fixtures/geodata/nz_relief_tile_r0c1.tif"),
    ),
    (
        "nz_relief_r1c0.tif",
        include_bytes!("../fixtures/geodata/nz_relief_tile_r1c0.tif"),
    ),
    (
        "nz_relief_r1c1.tif",
        include_bytes!("../fixtures/geodata/nz_relief_tile_r1c1.tif"),
    ),
];
