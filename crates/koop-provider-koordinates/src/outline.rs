//! Where an EPSG:4326 rectangle (a query's envelope) lies in a layer's CRS, for deciding R-tree
//! candidates from their boxes alone.
//!
//! A rectangle in longitude and latitude maps into a projected CRS (NZTM2000, UTM, Web Mercator)
//! as a quadrilateral turned by the grid convergence (about 1° in most of New Zealand) whose
//! edges curve slightly (a parallel 1° long bows by about 120 m in NZTM). [`Outline`] holds the
//! four chords between the mapped corners and how far each mapped edge strays from its chord:
//! a box beyond every chord by more than that lies inside the image, a box wholly behind one
//! chord by more than the image reaches lies outside it, and only boxes in the thin bands
//! between are tested exactly. An axis-aligned box inside the image (what this replaced) left
//! every candidate in the corners the rotation cuts off, and every one outside the image,
//! unsure: about a sixth of a 1° envelope's candidates, each read and reprojected.
//!
//! The bands are measured, not assumed: each edge is sampled ([`EDGE_SAMPLES`] steps), the
//! largest stray of the samples is widened by a tenth (a smooth edge bows between samples by a
//! thousandth of its whole bow) plus a millionth of the outline's size (rounding), and a point of
//! the inner region is mapped back into the rectangle. When the mapping fails anywhere, an edge
//! strays from its chord by more than [`MAX_STRAY`] of its length or folds back along it (far
//! from the projection's centre), or the outline is degenerate, there is no outline and every
//! candidate is tested.

use koop::Epsg;
use koop_geoservices::Reprojector;

/// Samples per edge of the rectangle mapped into the layer's CRS.
const EDGE_SAMPLES: u32 = 32;

/// The most an edge may stray from its chord, as a share of the chord's length, for the outline
/// to be trusted (a 1° parallel in NZTM strays 0.14 %, a 2° one at 46° S 0.3 %).
const MAX_STRAY: f64 = 0.02;

/// Where a box lies against the image of the rectangle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Wholly inside: whatever it holds intersects the rectangle.
    Inside,
    /// Wholly outside: nothing it holds intersects the rectangle.
    Outside,
    /// Across the image's edge (or too close to tell): its geometry is tested.
    Unsure,
}

/// One chord: the line through two mapped corners, as a unit normal pointing into the image and
/// the offset of the line along it.
#[derive(Debug, Clone, Copy)]
struct Chord {
    normal_x: f64,
    normal_y: f64,
    offset: f64,
    /// How far inside the chord a box must lie to be past this edge of the image, in the
    /// layer's units.
    inner: f64,
    /// How far outside the chord the image reaches, in the layer's units.
    outer: f64,
}

impl Chord {
    /// The signed distance of a point from the chord, positive on the image's side.
    fn distance(&self, x: f64, y: f64) -> f64 {
        self.normal_x * x + self.normal_y * y - self.offset
    }

    /// The least and greatest signed distance of the box `[min_x, min_y, max_x, max_y]`'s
    /// corners.
    fn range(&self, [min_x, min_y, max_x, max_y]: [f64; 4]) -> (f64, f64) {
        let (near_x, far_x) = if self.normal_x >= 0.0 {
            (min_x, max_x)
        } else {
            (max_x, min_x)
        };
        let (near_y, far_y) = if self.normal_y >= 0.0 {
            (min_y, max_y)
        } else {
            (max_y, min_y)
        };
        (self.distance(near_x, near_y), self.distance(far_x, far_y))
    }
}

/// The image of an EPSG:4326 rectangle in a layer's CRS, as its four chords and their bands.
#[derive(Debug, Clone)]
pub(crate) struct Outline {
    chords: [Chord; 4],
    /// An axis-aligned box inside the inner region, when one was found: most candidates of a
    /// query lie inside it and are decided by four comparisons.
    fast: Option<[f64; 4]>,
    /// Whether a box wholly outside may be called [`Side::Outside`] (not for relations that
    /// compare envelopes taken in EPSG:4326).
    excludes: bool,
}

impl Outline {
    /// The outline of `rectangle` (EPSG:4326) in `srs`; `excludes` says whether boxes outside it
    /// may be called outside. `None` when the mapping fails or the outline cannot be trusted.
    pub(crate) fn new(rectangle: &geo_types::Rect<f64>, srs: Epsg, excludes: bool) -> Option<Self> {
        let forward = Reprojector::new(Epsg::WGS84, srs).ok()?;
        let back = Reprojector::new(srs, Epsg::WGS84).ok()?;
        let (min, max) = (rectangle.min(), rectangle.max());
        if !(min.x < max.x && min.y < max.y) {
            return None;
        }
        let edges = sampled_edges(&forward, rectangle)?;
        let mapped_corners: Vec<(f64, f64)> = edges.iter().map(|samples| samples[0]).collect();
        let (centre_x, centre_y) = (
            mapped_corners.iter().map(|c| c.0).sum::<f64>() / 4.0,
            mapped_corners.iter().map(|c| c.1).sum::<f64>() / 4.0,
        );
        let size = mapped_corners
            .iter()
            .map(|c| (c.0 - centre_x).hypot(c.1 - centre_y))
            .fold(0.0_f64, f64::max);
        if !(size.is_finite() && size > 0.0) {
            return None;
        }
        let rounding = size * 1e-6;
        let mut chords = Vec::with_capacity(4);
        for (index, samples) in edges.iter().enumerate() {
            let (x0, y0) = mapped_corners[index];
            let (x1, y1) = mapped_corners[(index + 1) % 4];
            let length = (x1 - x0).hypot(y1 - y0);
            if length.is_nan() || length <= size * 1e-3 {
                return None;
            }
            let (mut normal_x, mut normal_y) = (-(y1 - y0) / length, (x1 - x0) / length);
            if normal_x * (centre_x - x0) + normal_y * (centre_y - y0) < 0.0 {
                (normal_x, normal_y) = (-normal_x, -normal_y);
            }
            let mut chord = Chord {
                normal_x,
                normal_y,
                offset: normal_x * x0 + normal_y * y0,
                inner: 0.0,
                outer: 0.0,
            };
            // The centre must lie well inside every chord, or the outline is no quadrilateral
            // this can reason about.
            if chord.distance(centre_x, centre_y) < size * 1e-2 {
                return None;
            }
            let stray = samples
                .iter()
                .map(|&(x, y)| chord.distance(x, y).abs())
                .fold(0.0_f64, f64::max);
            // Samples tell how an edge bows only where it is nearly straight and runs one way
            // along its chord: far from a projection's centre (a continent in NZTM, the whole
            // world) edges fold and loop between samples, and nothing is decided there.
            let along = |&(x, y): &(f64, f64)| (x - x0) * (x1 - x0) + (y - y0) * (y1 - y0);
            if stray > MAX_STRAY * length
                || !samples
                    .windows(2)
                    .all(|pair| along(&pair[0]) < along(&pair[1]))
            {
                return None;
            }
            chord.inner = stray * 1.1 + rounding;
            chords.push(chord);
        }
        // How far the image reaches beyond each chord: any edge's samples, not only its own.
        for chord in &mut chords {
            let reach = edges
                .iter()
                .flatten()
                .map(|&(x, y)| -chord.distance(x, y))
                .fold(0.0_f64, f64::max);
            chord.outer = reach * 1.1 + rounding;
        }
        let chords: [Chord; 4] = chords.try_into().ok()?;
        // The inner region lies inside the image when one of its points does (no edge of the
        // image enters it): the centre, if it is in the inner region, mapped back.
        if chords
            .iter()
            .any(|chord| chord.distance(centre_x, centre_y) <= chord.inner)
        {
            return None;
        }
        let (lon, lat) = back.position(centre_x, centre_y).ok()?;
        if !(lon > min.x && lon < max.x && lat > min.y && lat < max.y) {
            return None;
        }
        let fast = fast_box(&chords);
        Some(Self {
            chords,
            fast,
            excludes,
        })
    }

    /// Where the box `[min_x, min_y, max_x, max_y]` (in the layer's CRS) lies.
    pub(crate) fn side(&self, bounds: [f64; 4]) -> Side {
        if let Some([x0, y0, x1, y1]) = self.fast
            && bounds[0] >= x0
            && bounds[1] >= y0
            && bounds[2] <= x1
            && bounds[3] <= y1
        {
            return Side::Inside;
        }
        let mut inside = true;
        for chord in &self.chords {
            let (near, far) = chord.range(bounds);
            if self.excludes && far < -chord.outer {
                return Side::Outside;
            }
            inside &= near > chord.inner;
        }
        if inside { Side::Inside } else { Side::Unsure }
    }
}

/// The edges of `rectangle` (EPSG:4326, corners counter-clockwise from its lower left) mapped by
/// `forward`, [`EDGE_SAMPLES`] steps each; `None` when a sample cannot be mapped.
fn sampled_edges(
    forward: &Reprojector,
    rectangle: &geo_types::Rect<f64>,
) -> Option<Vec<Vec<(f64, f64)>>> {
    let (min, max) = (rectangle.min(), rectangle.max());
    let corners = [
        (min.x, min.y),
        (max.x, min.y),
        (max.x, max.y),
        (min.x, max.y),
    ];
    let mut edges = Vec::with_capacity(4);
    for (index, &(x0, y0)) in corners.iter().enumerate() {
        let (x1, y1) = corners[(index + 1) % 4];
        let mut samples = Vec::with_capacity(EDGE_SAMPLES as usize + 1);
        for step in 0..=EDGE_SAMPLES {
            let t = f64::from(step) / f64::from(EDGE_SAMPLES);
            let mapped = forward
                .position(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)
                .ok()?;
            if !(mapped.0.is_finite() && mapped.1.is_finite()) {
                return None;
            }
            samples.push(mapped);
        }
        edges.push(samples);
    }
    Some(edges)
}

/// An axis-aligned box inside the region within every chord's inner band: between the middle
/// two of the region's corners on each axis, checked corner by corner (the region is convex).
fn fast_box(chords: &[Chord; 4]) -> Option<[f64; 4]> {
    let mut xs = [0.0; 4];
    let mut ys = [0.0; 4];
    for index in 0..4 {
        // Where the inner lines of two neighbouring chords cross.
        let (a, b) = (&chords[(index + 3) % 4], &chords[index]);
        let determinant = a.normal_x * b.normal_y - a.normal_y * b.normal_x;
        if determinant.abs() < 1e-9 {
            return None;
        }
        let (ca, cb) = (a.offset + a.inner, b.offset + b.inner);
        xs[index] = (ca * b.normal_y - cb * a.normal_y) / determinant;
        ys[index] = (a.normal_x * cb - b.normal_x * ca) / determinant;
    }
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    let fast = [xs[1], ys[1], xs[2], ys[2]];
    let [x0, y0, x1, y1] = fast;
    let holds = x0 < x1
        && y0 < y1
        && [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            .iter()
            .all(|&(x, y)| {
                chords
                    .iter()
                    .all(|chord| chord.distance(x, y) > chord.inner)
            });
    holds.then_some(fast)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rectangle's test of a point in the layer's CRS: its image in EPSG:4326 inside.
    fn truly_inside(back: &Reprojector, rectangle: &geo_types::Rect<f64>, x: f64, y: f64) -> bool {
        let (lon, lat) = back.position(x, y).expect("within NZTM's domain");
        lon >= rectangle.min().x
            && lon <= rectangle.max().x
            && lat >= rectangle.min().y
            && lat <= rectangle.max().y
    }

    #[test]
    fn points_called_inside_or_outside_are_and_few_are_unsure() {
        let nztm = Epsg::new(2193).expect("an EPSG code");
        let back = Reprojector::new(nztm, Epsg::WGS84).expect("NZTM");
        let forward = Reprojector::new(Epsg::WGS84, nztm).expect("NZTM");
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1_u64 << 53) as f64
        };
        // The bench's envelope, one far from NZTM's central meridian, and a small one.
        for (x0, y0, x1, y1) in [
            (174.0, -42.0, 175.0, -41.0),
            (166.5, -46.5, 168.5, -45.0),
            (174.76, -36.86, 174.78, -36.84),
        ] {
            let rectangle = geo_types::Rect::new((x0, y0), (x1, y1));
            let outline = Outline::new(&rectangle, nztm, true).expect("an outline");
            let fast = outline.fast.expect("a fast box for a rotated rectangle");
            let slow = Outline {
                fast: None,
                ..outline.clone()
            };
            // The fast box is inside the inner region: the same verdict without it.
            for (x, y) in [(fast[0], fast[1]), (fast[2], fast[3]), (fast[0], fast[3])] {
                assert_eq!(slow.side([x, y, x, y]), Side::Inside);
            }
            // Points over the rectangle's image and around it, in longitude and latitude.
            let (mut unsure, mut total) = (0, 0);
            for _ in 0..40_000 {
                let lon = x0 - (x1 - x0) * 0.2 + next() * (x1 - x0) * 1.4;
                let lat = y0 - (y1 - y0) * 0.2 + next() * (y1 - y0) * 1.4;
                let (x, y) = forward.position(lon, lat).expect("within NZTM's domain");
                let inside = truly_inside(&back, &rectangle, x, y);
                total += 1;
                assert_eq!(outline.side([x, y, x, y]), slow.side([x, y, x, y]));
                match outline.side([x, y, x, y]) {
                    Side::Inside => assert!(inside, "({lon}, {lat}) called inside"),
                    Side::Outside => assert!(!inside, "({lon}, {lat}) called outside"),
                    Side::Unsure => unsure += 1,
                }
            }
            assert!(
                unsure * 100 < total,
                "{unsure} of {total} unsure for {rectangle:?}"
            );
            // Points on the edges are never decided by the outline.
            for step in 0..=100 {
                let t = f64::from(step) / 100.0;
                for (lon, lat) in [
                    (x0 + (x1 - x0) * t, y0),
                    (x0 + (x1 - x0) * t, y1),
                    (x0, y0 + (y1 - y0) * t),
                    (x1, y0 + (y1 - y0) * t),
                ] {
                    let (x, y) = forward.position(lon, lat).expect("within NZTM's domain");
                    assert_eq!(outline.side([x, y, x, y]), Side::Unsure, "({lon}, {lat})");
                }
            }
            // A box across the image's edge is unsure however small its corner inside.
            let (cx, cy) = forward.position(x0, f64::midpoint(y0, y1)).expect("NZTM");
            assert_eq!(
                outline.side([cx - 1000.0, cy - 1.0, cx + 1.0, cy + 1.0]),
                Side::Unsure
            );
        }
        // Larger rectangles: an outline, when there is one, is never wrong.
        for (x0, y0, x1, y1) in [(166.0, -48.0, 179.0, -34.0), (160.0, -55.0, 185.0, -30.0)] {
            let rectangle = geo_types::Rect::new((x0, y0), (x1, y1));
            let Some(outline) = Outline::new(&rectangle, nztm, true) else {
                continue;
            };
            for _ in 0..20_000 {
                let lon = x0 - (x1 - x0) * 0.2 + next() * (x1 - x0) * 1.4;
                let lat = y0 - (y1 - y0) * 0.2 + next() * (y1 - y0) * 1.4;
                let (x, y) = forward.position(lon, lat).expect("within NZTM's domain");
                let inside = truly_inside(&back, &rectangle, x, y);
                match outline.side([x, y, x, y]) {
                    Side::Inside => assert!(inside, "({lon}, {lat}) called inside"),
                    Side::Outside => assert!(!inside, "({lon}, {lat}) called outside"),
                    Side::Unsure => {}
                }
            }
        }
        // Without `excludes` nothing is called outside.
        let rectangle = geo_types::Rect::new((174.0, -42.0), (175.0, -41.0));
        let outline = Outline::new(&rectangle, nztm, false).expect("an outline");
        let (x, y) = forward.position(176.0, -41.5).expect("NZTM");
        assert_eq!(outline.side([x, y, x, y]), Side::Unsure);
    }

    #[test]
    fn the_same_crs_and_unmappable_rectangles() {
        // In EPSG:4326 itself the outline is the rectangle, with rounding's band only.
        let rectangle = geo_types::Rect::new((174.0, -42.0), (175.0, -41.0));
        let outline = Outline::new(&rectangle, Epsg::WGS84, true).expect("an outline");
        assert_eq!(outline.side([174.5, -41.5, 174.5, -41.5]), Side::Inside);
        assert_eq!(
            outline.side([174.000_01, -41.5, 174.1, -41.4]),
            Side::Inside
        );
        assert_eq!(outline.side([173.9, -41.5, 174.1, -41.4]), Side::Unsure);
        assert_eq!(outline.side([175.1, -41.5, 175.2, -41.4]), Side::Outside);
        // Web Mercator cannot map the poles.
        let polar = geo_types::Rect::new((-10.0, 80.0), (10.0, 90.0));
        assert!(Outline::new(&polar, Epsg::WEB_MERCATOR, true).is_none());
        // Nothing to map.
        let flat = geo_types::Rect::new((174.0, -41.0), (175.0, -41.0));
        assert!(Outline::new(&flat, Epsg::WGS84, true).is_none());
        // Far from NZTM's central meridian, or the whole world: its edges fold; nothing is
        // decided by an outline.
        let nztm = Epsg::new(2193).expect("an EPSG code");
        for (x0, y0, x1, y1) in [
            (-180.0, -90.0, 180.0, 90.0),
            (-10.0, 40.0, 10.0, 60.0),
            (100.0, -60.0, 179.0, 0.0),
        ] {
            let rectangle = geo_types::Rect::new((x0, y0), (x1, y1));
            assert!(
                Outline::new(&rectangle, nztm, true).is_none(),
                "{rectangle:?}"
            );
        }
    }
}
