//! `generateRenderer` (ArcGIS REST API, "Generate Renderer (Feature Service/Layer)"), answered as
//! Koop's FeatureServer answers it (`lib/generate-renderer`, with winnow's classification and
//! classybrew's class breaks): a `uniqueValue` renderer from the distinct combinations of up to
//! three fields with their counts, or a `classBreaks` renderer of a numeric field by equal
//! interval, quantile or natural breaks (Jenks), optionally normalized by a field, by log or by
//! percent of total; symbols from the `baseSymbol` or the geometry type's default, coloured along
//! an algorithmic colour ramp (HSV, CIE Lab or `LCh`, as chroma.js interpolates them).
//!
//! The values come from the layer's own query: the request's filters (`where`, `objectIds`,
//! `geometry`…) with `outStatistics` grouped by the classified fields, so the Koordinates
//! provider answers them with SQL aggregates and nothing holds the layer. Memory is bounded: at
//! most [`MAX_UNIQUE_VALUES`] unique values and [`MAX_CLASSIFIED_VALUES`] distinct values of a
//! classified field (equal intervals of an unnormalized field need only its minimum and maximum,
//! whatever the layer's size), and natural breaks of at most [`MAX_NATURAL_BREAKS_VALUES`]
//! distinct values (Jenks is quadratic); past a bound the answer is a 400 naming it.
//!
//! Deliberate differences from Koop: a `uniqueValue` renderer names its second and third fields
//! (Koop leaves `field2`/`field3` empty); values at or below zero are classified as they are
//! (Koop counts them as 0); standard deviation and geometrical intervals are refused, as are
//! multipart colour ramps (Koop's produce no usable symbols).

use std::collections::BTreeMap;

use koop_provider::{FieldType, GeometryType, ProviderRequest};
use serde_json::{Map, Value as Json, json};

use crate::engine::Answer;
use crate::response::GeoservicesError;
use koop_server::OutputContext;

use crate::layer::Layer;
use crate::{Settings, esri, fetch_layer, info_encoding, layer_id, run_query};

/// Longest `classificationDef` read, in bytes.
const MAX_DEFINITION_BYTES: usize = 16 * 1024;
/// Most unique values a `uniqueValue` renderer lists.
pub(crate) const MAX_UNIQUE_VALUES: u32 = 1_000;
/// Most distinct values of a classified field read for quantiles, natural breaks or a
/// normalized field.
pub(crate) const MAX_CLASSIFIED_VALUES: u32 = 50_000;
/// Most distinct values natural breaks are computed over (time grows with their square).
pub(crate) const MAX_NATURAL_BREAKS_VALUES: usize = 2_000;
/// Most classes of a `classBreaks` renderer.
const MAX_BREAKS: u64 = 64;

/// How class breaks are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    EqualInterval,
    Quantile,
    NaturalBreaks,
}

/// How values are transformed before they are classified.
#[derive(Debug, Clone, PartialEq)]
enum Normalization {
    None,
    /// `esriNormalizeByField`: value ÷ the field's value (1 where it is not positive).
    Field(String),
    /// `esriNormalizeByLog`: log10 of the value, 0 at or below 1.
    Log,
    /// `esriNormalizeByPercentOfTotal`: percent of the sum of every value.
    Percent,
}

/// A colour space the ramp is interpolated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColorSpace {
    Hsl,
    Lab,
    Lch,
}

/// An algorithmic colour ramp: `fromColor` to `toColor`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ramp {
    from: [f64; 3],
    to: [f64; 3],
    space: ColorSpace,
}

/// What to classify.
#[derive(Debug, Clone, PartialEq)]
enum Classification {
    UniqueValue {
        fields: Vec<String>,
        delimiter: String,
    },
    ClassBreaks {
        field: String,
        method: Method,
        method_name: String,
        breaks: u64,
        normalization: Normalization,
    },
}

/// A parsed `classificationDef`.
#[derive(Debug, Clone, PartialEq)]
struct Definition {
    classification: Classification,
    base_symbol: Option<Map<String, Json>>,
    ramp: Ramp,
}

fn bad(message: impl Into<String>) -> GeoservicesError {
    GeoservicesError::bad_request(message)
}

/// An `[r, g, b(, a)]` colour of a ramp.
fn color(
    value: Option<&Json>,
    default: [f64; 3],
    name: &str,
) -> Result<[f64; 3], GeoservicesError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let channels: Vec<f64> = value
        .as_array()
        .map(|channels| channels.iter().filter_map(Json::as_f64).collect())
        .unwrap_or_default();
    match channels.as_slice() {
        [r, g, b, ..] if [r, g, b].iter().all(|c| (0.0..=255.0).contains(*c)) => Ok([*r, *g, *b]),
        _ => Err(bad(format!(
            "colorRamp.{name} must be [r, g, b] with channels from 0 to 255"
        ))),
    }
}

fn ramp(definition: &Json) -> Result<Ramp, GeoservicesError> {
    let ramp = &definition["colorRamp"];
    if let Some(kind) = ramp.get("type").and_then(Json::as_str)
        && kind != "algorithmic"
    {
        return Err(bad(format!(
            "Invalid color ramp type: {kind}; koop generates algorithmic ramps"
        )));
    }
    let space = match ramp.get("algorithm").and_then(Json::as_str) {
        Some("esriCIELabAlgorithm") => ColorSpace::Lab,
        Some("esriLabLChAlgorithm") => ColorSpace::Lch,
        _ => ColorSpace::Hsl,
    };
    Ok(Ramp {
        from: color(ramp.get("fromColor"), [0.0, 255.0, 0.0], "fromColor")?,
        to: color(ramp.get("toColor"), [0.0, 0.0, 255.0], "toColor")?,
        space,
    })
}

/// The classification of a `uniqueValueDef`.
fn unique_value_definition(definition: &Json) -> Result<Classification, GeoservicesError> {
    let string = |name: &str| definition.get(name).and_then(Json::as_str);

    let fields: Vec<String> = definition
                .get("uniqueValueFields")
                .and_then(Json::as_array)
                .ok_or_else(|| {
                    bad("uniqueValueDef requires a classification definition with \"uniqueValueFields\" array")
                })?
                .iter()
                .map(|field| {
                    field
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad("uniqueValueFields must be field names"))
                })
                .collect::<Result<_, _>>()?;
    if fields.is_empty() || fields.len() > 3 {
        return Err(bad("uniqueValueFields names one to three fields"));
    }
    Ok(Classification::UniqueValue {
        fields,
        delimiter: string("fieldDelimiter").unwrap_or(", ").to_owned(),
    })
}

/// The classification of a `classBreaksDef`.
fn class_breaks_definition(definition: &Json) -> Result<Classification, GeoservicesError> {
    let string = |name: &str| definition.get(name).and_then(Json::as_str);

    let field = string("classificationField")
        .filter(|field| !field.is_empty())
        .ok_or_else(|| bad("classBreaksDef requires a \"classificationField\""))?
        .to_owned();
    let method_name = string("classificationMethod").unwrap_or("esriClassifyEqualInterval");
    let method = match method_name {
        "esriClassifyEqualInterval" | "equalInterval" => Method::EqualInterval,
        "esriClassifyQuantile" | "quantile" => Method::Quantile,
        "esriClassifyNaturalBreaks" | "naturalBreaks" => Method::NaturalBreaks,
        other => {
            return Err(bad(format!(
                "Classification method {other:?} is not supported: use esriClassifyEqualInterval, esriClassifyQuantile or esriClassifyNaturalBreaks"
            )));
        }
    };
    let breaks = definition
        .get("breakCount")
        .and_then(Json::as_u64)
        .unwrap_or(5);
    if breaks == 0 || breaks > MAX_BREAKS {
        return Err(bad(format!("breakCount must be from 1 to {MAX_BREAKS}")));
    }
    let normalization = match string("normalizationType") {
        None | Some("esriNormalizeNone") => Normalization::None,
        Some("esriNormalizeByField" | "field") => Normalization::Field(
            string("normalizationField")
                .filter(|field| !field.is_empty())
                .ok_or_else(|| bad("Normalization field is undefined"))?
                .to_owned(),
        ),
        Some("esriNormalizeByLog" | "log") => Normalization::Log,
        Some("esriNormalizeByPercentOfTotal" | "percent") => Normalization::Percent,
        Some(other) => return Err(bad(format!("Normalization not supported: {other}"))),
    };
    Ok(Classification::ClassBreaks {
        field,
        method,
        method_name: method_name.to_owned(),
        breaks,
        normalization,
    })
}

/// Parses `classificationDef` (a JSON object).
fn parse(text: Option<&str>) -> Result<Definition, GeoservicesError> {
    let text = text
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| bad("classification definition is required"))?;
    if text.len() > MAX_DEFINITION_BYTES {
        return Err(bad("classificationDef is longer than 16384 bytes"));
    }
    let definition: Json =
        serde_json::from_str(text).map_err(|_| bad("classificationDef is not a JSON object"))?;
    if !definition.is_object() {
        return Err(bad("classificationDef is not a JSON object"));
    }
    let string = |name: &str| definition.get(name).and_then(Json::as_str);
    let base_symbol = match definition.get("baseSymbol") {
        None | Some(Json::Null) => None,
        Some(Json::Object(symbol)) => {
            if !matches!(
                symbol.get("type").and_then(Json::as_str),
                Some("esriSMS" | "esriSLS" | "esriSFS")
            ) {
                return Err(bad(
                    "baseSymbol requires a valid type: esriSMS, esriSLS, esriSFS",
                ));
            }
            Some(symbol.clone())
        }
        Some(_) => return Err(bad("baseSymbol must be a symbol object")),
    };
    let classification = match string("type") {
        Some("uniqueValueDef") => unique_value_definition(&definition)?,
        Some("classBreaksDef") => class_breaks_definition(&definition)?,
        _ => {
            return Err(bad(
                "invalid classification type: use classBreaksDef or uniqueValueDef",
            ));
        }
    };
    Ok(Definition {
        classification,
        base_symbol,
        ramp: ramp(&definition)?,
    })
}

/// The default symbol of a geometry type (Koop's `PointRenderer`, `LineRenderer`,
/// `PolygonRenderer`).
fn default_symbol(geometry_type: GeometryType) -> Json {
    let outline = |color: [u8; 4]| json!({"color": color, "width": 0.5, "type": "esriSLS", "style": "esriSLSSolid"});
    match esri::geometry_type_name(geometry_type) {
        "esriGeometryPolyline" => {
            json!({"color": [247, 150, 70, 204], "width": 7, "type": "esriSLS", "style": "esriSLSSolid"})
        }
        "esriGeometryPolygon" => {
            json!({"color": [75, 172, 198, 161], "outline": outline([150, 150, 150, 155]), "type": "esriSFS", "style": "esriSFSSolid"})
        }
        _ => {
            json!({"color": [45, 172, 128, 161], "outline": outline([190, 190, 190, 105]), "size": 7.5, "type": "esriSMS", "style": "esriSMSCircle"})
        }
    }
}

/// The symbol type a geometry type is drawn with.
fn symbol_type(geometry_type: GeometryType) -> &'static str {
    match esri::geometry_type_name(geometry_type) {
        "esriGeometryPolyline" => "esriSLS",
        "esriGeometryPolygon" => "esriSFS",
        _ => "esriSMS",
    }
}

/// A number as JSON, integral values as integers (as JavaScript writes them).
fn number(value: f64) -> Json {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "only integral values well inside i64"
    )]
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

/// A number as JavaScript's `String(n)` writes it, for labels.
fn label_number(value: f64) -> String {
    match number(value) {
        Json::Number(number) => number.to_string(),
        other => other.to_string(),
    }
}

/// Digits after the decimal point of `value` (winnow's `getPrecision`), at most 20.
fn precision(value: f64) -> i32 {
    if !value.is_finite() {
        return 0;
    }
    let mut scale = 1.0_f64;
    for digits in 0..20 {
        if ((value * scale).round() / scale).total_cmp(&value).is_eq() {
            return digits;
        }
        scale *= 10.0;
    }
    20
}

/// Class ranges from break values (winnow's `transformClassBreaksToRanges`): each class after
/// the first starts one unit of its lower bound's last decimal above it.
fn ranges(breaks: &[f64]) -> Vec<(f64, f64)> {
    breaks
        .windows(2)
        .enumerate()
        .map(|(index, pair)| {
            if index == 0 {
                return (pair[0], pair[1]);
            }
            let divisor = 10_f64.powi(precision(pair[0]));
            (
                ((pair[0] + 1.0 / divisor) * divisor).round() / divisor,
                pair[1],
            )
        })
        .collect()
}

/// Equal intervals from `min` to `max` (classybrew's `_classifyEqualInterval`).
fn equal_interval(min: f64, max: f64, classes: usize) -> Vec<f64> {
    let interval = (max - min) / classes as f64;
    let mut breaks = Vec::with_capacity(classes + 1);
    let mut value = min;
    for _ in 0..=classes {
        breaks.push(value);
        value += interval;
    }
    breaks[classes] = max;
    breaks.sort_by(f64::total_cmp);
    breaks
}

/// The value at 0-based position `index` of the sorted series that `values` (value, count;
/// sorted, distinct) stand for.
fn at_position(values: &[(f64, u64)], index: u64) -> f64 {
    let mut seen = 0;
    for &(value, count) in values {
        seen += count;
        if index < seen {
            return value;
        }
    }
    values.last().map_or(f64::NAN, |&(value, _)| value)
}

/// Quantiles (classybrew's `_classifyQuantile`) of the series `values` stand for.
fn quantile(values: &[(f64, u64)], classes: usize) -> Vec<f64> {
    let total: u64 = values.iter().map(|&(_, count)| count).sum();
    let step = total as f64 / classes as f64;
    let mut breaks = vec![values.first().map_or(f64::NAN, |&(value, _)| value)];
    for class in 1..classes {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a position within the series"
        )]
        let position = (class as f64 * step + 0.49).round() as u64;
        breaks.push(at_position(values, position.saturating_sub(1)));
    }
    let max = values.last().map_or(f64::NAN, |&(value, _)| value);
    // classybrew compares with the bound at the series' length, which rarely exists.
    let index = usize::try_from(total.saturating_sub(1)).unwrap_or(usize::MAX);
    if !breaks
        .get(index)
        .is_some_and(|bound| bound.total_cmp(&max).is_eq())
    {
        breaks.push(max);
    }
    breaks.sort_by(f64::total_cmp);
    breaks
}

/// Natural breaks (Fisher–Jenks, as classybrew's `_classifyJenks`) of weighted, sorted,
/// distinct values: each class's upper value, between the minimum and the maximum.
fn natural_breaks(values: &[(f64, u64)], classes: usize) -> Vec<f64> {
    let n = values.len();
    let k = classes.min(n).max(1);
    // lower[l][c]: the first value (1-based) of the last class when the first l values are
    // cut into c classes; variance[l][c]: the least sum of squared deviations.
    let mut lower = vec![vec![0_usize; k + 1]; n + 1];
    let mut variance = vec![vec![0.0_f64; k + 1]; n + 1];
    for c in 1..=k {
        lower[0][c] = 1;
        for row in variance.iter_mut().skip(1) {
            row[c] = f64::INFINITY;
        }
    }
    for l in 1..=n {
        let (mut sum, mut squares, mut weight) = (0.0, 0.0, 0.0);
        let mut deviation = 0.0;
        for m in 1..=l {
            let first = l - m + 1;
            let (value, count) = values[first - 1];
            let count = count as f64;
            sum += value * count;
            squares += value * value * count;
            weight += count;
            deviation = squares - sum * sum / weight;
            let before = first - 1;
            if before != 0 {
                for c in 2..=k {
                    if variance[l][c] >= deviation + variance[before][c - 1] {
                        lower[l][c] = first;
                        variance[l][c] = deviation + variance[before][c - 1];
                    }
                }
            }
        }
        lower[l][1] = 1;
        variance[l][1] = deviation;
    }
    let mut breaks = vec![0.0; k + 1];
    breaks[0] = values[0].0;
    breaks[k] = values[n - 1].0;
    let mut last = n;
    for c in (2..=k).rev() {
        let first = lower[last][c];
        breaks[c - 1] = values[first.saturating_sub(2)].0;
        last = first.saturating_sub(1).max(1);
    }
    breaks.sort_by(f64::total_cmp);
    breaks
}

/// Colour conversions after chroma.js (D65 white, sRGB companding).
#[allow(
    clippy::many_single_char_names,
    reason = "the channels' own names: r, g, b, h, s, l, a, c"
)]
mod colors {
    const XN: f64 = 0.950_470;
    const YN: f64 = 1.0;
    const ZN: f64 = 1.088_830;
    const T0: f64 = 4.0 / 29.0;
    const T1: f64 = 6.0 / 29.0;
    const T2: f64 = 3.0 * T1 * T1;
    const T3: f64 = T1 * T1 * T1;

    pub(super) fn rgb_to_hsl([r, g, b]: [f64; 3]) -> [f64; 3] {
        let (r, g, b) = (r / 255.0, g / 255.0, b / 255.0);
        let (min, max) = (r.min(g).min(b), r.max(g).max(b));
        let l = f64::midpoint(max, min);
        if (max - min).abs() < f64::EPSILON {
            return [f64::NAN, 0.0, l];
        }
        let s = if l < 0.5 {
            (max - min) / (max + min)
        } else {
            (max - min) / (2.0 - max - min)
        };
        let h = if (r - max).abs() < f64::EPSILON {
            (g - b) / (max - min)
        } else if (g - max).abs() < f64::EPSILON {
            2.0 + (b - r) / (max - min)
        } else {
            4.0 + (r - g) / (max - min)
        } * 60.0;
        [if h < 0.0 { h + 360.0 } else { h }, s, l]
    }

    pub(super) fn hsl_to_rgb([h, s, l]: [f64; 3]) -> [f64; 3] {
        if s == 0.0 || h.is_nan() {
            return [l * 255.0; 3];
        }
        let t2 = if l < 0.5 {
            l * (1.0 + s)
        } else {
            l + s - l * s
        };
        let t1 = 2.0 * l - t2;
        let hue = h / 360.0;
        [hue + 1.0 / 3.0, hue, hue - 1.0 / 3.0].map(|mut t| {
            if t < 0.0 {
                t += 1.0;
            }
            if t > 1.0 {
                t -= 1.0;
            }
            255.0
                * if 6.0 * t < 1.0 {
                    t1 + (t2 - t1) * 6.0 * t
                } else if 2.0 * t < 1.0 {
                    t2
                } else if 3.0 * t < 2.0 {
                    t1 + (t2 - t1) * (2.0 / 3.0 - t) * 6.0
                } else {
                    t1
                }
        })
    }

    fn rgb_xyz(channel: f64) -> f64 {
        let channel = channel / 255.0;
        if channel <= 0.040_45 {
            channel / 12.92
        } else {
            ((channel + 0.055) / 1.055).powf(2.4)
        }
    }

    fn xyz_lab(t: f64) -> f64 {
        if t > T3 { t.cbrt() } else { t / T2 + T0 }
    }

    pub(super) fn rgb_to_lab([r, g, b]: [f64; 3]) -> [f64; 3] {
        let (r, g, b) = (rgb_xyz(r), rgb_xyz(g), rgb_xyz(b));
        let x = xyz_lab((0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b) / XN);
        let y = xyz_lab((0.212_672_9 * r + 0.715_152_2 * g + 0.072_175_0 * b) / YN);
        let z = xyz_lab((0.019_333_9 * r + 0.119_192_0 * g + 0.950_304_1 * b) / ZN);
        [116.0 * y - 16.0, 500.0 * (x - y), 200.0 * (y - z)]
    }

    fn lab_xyz(t: f64) -> f64 {
        if t > T1 { t * t * t } else { T2 * (t - T0) }
    }

    fn xyz_rgb(channel: f64) -> f64 {
        255.0
            * if channel <= 0.003_04 {
                12.92 * channel
            } else {
                1.055 * channel.powf(1.0 / 2.4) - 0.055
            }
    }

    pub(super) fn lab_to_rgb([l, a, b]: [f64; 3]) -> [f64; 3] {
        let y = (l + 16.0) / 116.0;
        let x = y + a / 500.0;
        let z = y - b / 200.0;
        let (x, y, z) = (XN * lab_xyz(x), YN * lab_xyz(y), ZN * lab_xyz(z));
        [
            xyz_rgb(3.240_454_2 * x - 1.537_138_5 * y - 0.498_531_4 * z),
            xyz_rgb(-0.969_266_0 * x + 1.876_010_8 * y + 0.041_556_0 * z),
            xyz_rgb(0.055_643_4 * x - 0.204_025_9 * y + 1.057_225_2 * z),
        ]
    }

    pub(super) fn lab_to_lch([l, a, b]: [f64; 3]) -> [f64; 3] {
        let c = a.hypot(b);
        let h = if (c * 10_000.0).round() == 0.0 {
            f64::NAN
        } else {
            (b.atan2(a).to_degrees() + 360.0) % 360.0
        };
        [l, c, h]
    }

    pub(super) fn lch_to_lab([l, c, h]: [f64; 3]) -> [f64; 3] {
        let h = if h.is_nan() { 0.0 } else { h.to_radians() };
        [l, h.cos() * c, h.sin() * c]
    }

    /// A hue `f` of the way from `from` to `to` along the shorter way round.
    pub(super) fn hue(from: f64, to: f64, f: f64) -> f64 {
        match (from.is_nan(), to.is_nan()) {
            (true, true) => f64::NAN,
            (true, false) => to,
            (false, true) => from,
            (false, false) => {
                let delta = if to > from && to - from > 180.0 {
                    to - (from + 360.0)
                } else if to < from && from - to > 180.0 {
                    to + 360.0 - from
                } else {
                    to - from
                };
                (from + f * delta).rem_euclid(360.0)
            }
        }
    }
}

impl Ramp {
    /// The colour `f` (0..=1) of the way along the ramp, channels rounded as chroma.js's
    /// `rgb()` rounds them.
    fn at(&self, f: f64) -> [u8; 3] {
        let lerp = |a: f64, b: f64| a + f * (b - a);
        let rgb = match self.space {
            ColorSpace::Hsl => {
                let (a, b) = (colors::rgb_to_hsl(self.from), colors::rgb_to_hsl(self.to));
                colors::hsl_to_rgb([
                    colors::hue(a[0], b[0], f),
                    lerp(a[1], b[1]),
                    lerp(a[2], b[2]),
                ])
            }
            ColorSpace::Lab => {
                let (a, b) = (colors::rgb_to_lab(self.from), colors::rgb_to_lab(self.to));
                colors::lab_to_rgb([lerp(a[0], b[0]), lerp(a[1], b[1]), lerp(a[2], b[2])])
            }
            ColorSpace::Lch => {
                let a = colors::lab_to_lch(colors::rgb_to_lab(self.from));
                let b = colors::lab_to_lch(colors::rgb_to_lab(self.to));
                colors::lab_to_rgb(colors::lch_to_lab([
                    lerp(a[0], b[0]),
                    lerp(a[1], b[1]),
                    colors::hue(a[2], b[2], f),
                ]))
            }
        };
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped to 0..=255"
        )]
        rgb.map(|channel| channel.round().clamp(0.0, 255.0) as u8)
    }

    /// `count` colours from one end to the other (chroma.js `scale.colors(count)`: one colour
    /// is the middle).
    fn colors(&self, count: usize) -> Vec<[u8; 3]> {
        match count {
            0 => Vec::new(),
            1 => vec![self.at(0.5)],
            _ => (0..count)
                .map(|index| self.at(index as f64 / (count - 1) as f64))
                .collect(),
        }
    }
}

/// The value of a statistics row's field, matched without regard to case.
fn row_value<'a>(row: &'a Map<String, Json>, name: &str) -> Option<&'a Json> {
    row.get(name).or_else(|| {
        row.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

/// A value as JavaScript's `Array.join` writes it: null is empty.
fn joined(value: Option<&Json>) -> String {
    match value {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(text)) => text.clone(),
        Some(Json::Number(number)) => number
            .as_f64()
            .map_or_else(|| number.to_string(), label_number),
        Some(other) => other.to_string(),
    }
}

/// The request parameters that choose features, kept for the classification's own query.
const FILTERS: [&str; 8] = [
    "where",
    "objectIds",
    "geometry",
    "geometryType",
    "inSR",
    "spatialRel",
    "time",
    "token",
];

/// The statistics query of the classification: the request's filters, `outStatistics` and
/// `groupByFieldsForStatistics`.
fn statistics_request(
    request: &ProviderRequest,
    statistics: &Json,
    group_by: &[&str],
) -> ProviderRequest {
    let mut query = request.clone();
    query.query = request
        .query
        .iter()
        .filter(|(key, _)| FILTERS.iter().any(|name| name.eq_ignore_ascii_case(key)))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect::<BTreeMap<_, _>>();
    query
        .query
        .insert("outStatistics".to_owned(), statistics.to_string());
    if !group_by.is_empty() {
        query
            .query
            .insert("groupByFieldsForStatistics".to_owned(), group_by.join(","));
    }
    query.query.insert("f".to_owned(), "json".to_owned());
    query.params.method = Some("query".to_owned());
    // A renderer is not a cached page: no conditional answer.
    query.if_none_match = None;
    query
}

/// Runs a statistics query of at most `limit` rows, page after page (ordered by the groups,
/// as the provider caps each page at its `maxRecordCount`); more is a 400 saying `too_many`.
async fn statistics_rows(
    context: &OutputContext,
    mut request: ProviderRequest,
    group_by: &[&str],
    limit: u32,
    too_many: impl FnOnce() -> String,
) -> Result<Vec<Map<String, Json>>, GeoservicesError> {
    if !group_by.is_empty() {
        let order: Vec<String> = group_by.iter().map(|name| format!("{name} ASC")).collect();
        request
            .query
            .insert("orderByFields".to_owned(), order.join(","));
    }
    let mut rows = Vec::new();
    loop {
        request
            .query
            .insert("resultOffset".to_owned(), rows.len().to_string());
        let crate::Queried::Answer(ran) = run_query(context, &request, limit).await? else {
            return Err(GeoservicesError {
                code: 500,
                message: "the classification's statistics query answered features".to_owned(),
                details: Vec::new(),
            });
        };
        let Answer::Statistics(page, exceeded) = ran.answer else {
            return Err(GeoservicesError {
                code: 500,
                message: "the classification's statistics query answered no statistics".to_owned(),
                details: Vec::new(),
            });
        };
        let empty = page.is_empty();
        rows.extend(page);
        if rows.len() > limit as usize {
            return Err(bad(too_many()));
        }
        if !exceeded || empty {
            return Ok(rows);
        }
    }
}

fn zero_features() -> GeoservicesError {
    bad("query results in zero features; features needed in order to classify")
}

/// Symbols of one renderer: the base symbol in each colour of the ramp.
struct Symbols {
    base: Json,
}

impl Symbols {
    /// The `baseSymbol`, which must draw `geometry_type`, or that type's default.
    fn of(
        base_symbol: Option<&Map<String, Json>>,
        geometry_type: GeometryType,
    ) -> Result<Self, GeoservicesError> {
        let base = match base_symbol {
            Some(symbol) => {
                if symbol.get("type").and_then(Json::as_str) != Some(symbol_type(geometry_type)) {
                    return Err(bad(
                        "Classification defintion uses a base symbol type that is incompatiable with dataset geometry",
                    ));
                }
                Json::Object(symbol.clone())
            }
            None => default_symbol(geometry_type),
        };
        Ok(Self { base })
    }

    fn symbol(&self, rgb: [u8; 3]) -> Json {
        let mut symbol = self.base.clone();
        symbol["color"] = json!(rgb);
        symbol
    }
}

/// A field of the layer by name (any case): its name and type.
fn field_of(layer: &Layer, name: &str) -> Result<(String, FieldType), GeoservicesError> {
    layer
        .schema
        .field(name)
        .ok_or_else(|| bad(format!("Unknown field: {name}")))
}

fn is_numeric(field_type: FieldType) -> bool {
    matches!(field_type, FieldType::Integer | FieldType::Double)
}

/// `count` of every feature, as `outStatistics`.
fn count_statistic(layer: &Layer) -> Json {
    json!([{"statisticType": "count", "onStatisticField": layer.schema.object_id, "outStatisticFieldName": "count"}])
}

/// `…/FeatureServer/{layer}/generateRenderer`.
pub(crate) async fn generate_renderer(
    context: &OutputContext,
    request: ProviderRequest,
    settings: Settings,
) -> Result<axum::response::Response, GeoservicesError> {
    let encoding = info_encoding(&request)?;
    layer_id(&request)?;
    let definition = parse(
        request
            .query
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case("classificationDef"))
            .map(|(_, value)| value.as_str()),
    )?;
    let mut info = request.clone();
    info.params.method = Some("info".to_owned());
    let (_, layer) = fetch_layer(context, &info, settings.max_record_count).await?;
    let geometry_type = layer
        .geometry_type
        .ok_or_else(|| bad("Dataset geometry type is not supported for renderers."))?;
    let symbols = Symbols::of(definition.base_symbol.as_ref(), geometry_type)?;
    let renderer = match &definition.classification {
        Classification::UniqueValue { fields, delimiter } => {
            let names: Vec<String> = fields
                .iter()
                .map(|name| field_of(&layer, name).map(|(name, _)| name))
                .collect::<Result<_, _>>()?;
            unique_value(
                context,
                &request,
                &layer,
                &names,
                delimiter,
                definition.ramp,
                &symbols,
            )
            .await?
        }
        Classification::ClassBreaks {
            field,
            method,
            method_name,
            breaks,
            normalization,
        } => {
            let (name, field_type) = field_of(&layer, field)?;
            if !is_numeric(field_type) {
                return Err(bad(format!(
                    "Cannot use non-numeric classificationField, {name}"
                )));
            }
            let values =
                classified_values(context, &request, &layer, &name, *method, normalization).await?;
            // Natural breaks take up to ~0.3 s of one core (breaks × values²): off the
            // runtime's threads.
            let (method, method_name, breaks, ramp) =
                (*method, method_name.clone(), *breaks, definition.ramp);
            tokio::task::spawn_blocking(move || {
                class_breaks(&values, &name, method, &method_name, breaks, ramp, &symbols)
            })
            .await
            .map_err(|_| GeoservicesError {
                code: 500,
                message: "the classification stopped".to_owned(),
                details: Vec::new(),
            })??
        }
    };
    Ok(encoding.respond(&renderer))
}

/// A `uniqueValue` renderer of `names`' distinct combinations.
async fn unique_value(
    context: &OutputContext,
    request: &ProviderRequest,
    layer: &Layer,
    names: &[String],
    delimiter: &str,
    ramp: Ramp,
    symbols: &Symbols,
) -> Result<Json, GeoservicesError> {
    let group_by: Vec<&str> = names.iter().map(String::as_str).collect();
    let rows = statistics_rows(
        context,
        statistics_request(request, &count_statistic(layer), &group_by),
        &group_by,
        MAX_UNIQUE_VALUES,
        || {
            format!(
                "more than {MAX_UNIQUE_VALUES} unique values of {}: classify fewer fields or features (a where clause)",
                names.join(", ")
            )
        },
    )
    .await?;
    if rows.is_empty() {
        return Err(zero_features());
    }
    let colors = ramp.colors(rows.len());
    let infos: Vec<Json> = rows
        .iter()
        .zip(colors)
        .map(|(row, rgb)| {
            let value = names
                .iter()
                .map(|name| joined(row_value(row, name)))
                .collect::<Vec<_>>()
                .join(delimiter);
            json!({
                "value": value,
                "count": row_value(row, "count").cloned().unwrap_or(json!(0)),
                "label": value,
                "description": "",
                "symbol": symbols.symbol(rgb),
            })
        })
        .collect();
    Ok(json!({
        "type": "uniqueValue",
        "field1": names[0],
        "field2": names.get(1).cloned().unwrap_or_default(),
        "field3": names.get(2).cloned().unwrap_or_default(),
        "fieldDelimiter": delimiter,
        "defaultSymbol": {},
        "defaultLabel": "",
        "uniqueValueInfos": infos,
    }))
}

/// `values` log- or percent-normalized as asked, then sorted and merged: `(value, count)`,
/// finite, distinct, non-empty.
fn sorted(
    mut values: Vec<(f64, u64)>,
    normalization: &Normalization,
) -> Result<Vec<(f64, u64)>, GeoservicesError> {
    match normalization {
        Normalization::Log => {
            for (value, _) in &mut values {
                *value = if *value <= 0.0 {
                    0.0
                } else {
                    value.log10().max(0.0)
                };
            }
        }
        Normalization::Percent => {
            let total: f64 = values
                .iter()
                .map(|&(value, count)| value * count as f64)
                .sum();
            if total <= 0.0 {
                return Err(bad(format!(
                    "Cannot normalize by percent because value total is not greater than 0: {total}"
                )));
            }
            for (value, _) in &mut values {
                *value = *value / total * 100.0;
            }
        }
        _ => {}
    }
    values.retain(|(value, count)| value.is_finite() && *count > 0);
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    values.dedup_by(|later, earlier| {
        if later.0.total_cmp(&earlier.0).is_eq() {
            earlier.1 += later.1;
            true
        } else {
            false
        }
    });
    if values.is_empty() {
        return Err(zero_features());
    }
    Ok(values)
}

/// The values of `name` to classify, normalized, as `(value, count)` sorted and distinct.
async fn classified_values(
    context: &OutputContext,
    request: &ProviderRequest,
    layer: &Layer,
    name: &str,
    method: Method,
    normalization: &Normalization,
) -> Result<Vec<(f64, u64)>, GeoservicesError> {
    if method == Method::EqualInterval && *normalization == Normalization::None {
        // The minimum and the maximum are enough, whatever the layer's size.
        let statistics = json!([
            {"statisticType": "min", "onStatisticField": name, "outStatisticFieldName": "min"},
            {"statisticType": "max", "onStatisticField": name, "outStatisticFieldName": "max"},
            {"statisticType": "count", "onStatisticField": name, "outStatisticFieldName": "count"},
        ]);
        let rows = statistics_rows(
            context,
            statistics_request(request, &statistics, &[]),
            &[],
            1,
            String::new,
        )
        .await?;
        let row = rows.first().ok_or_else(zero_features)?;
        let get = |key: &str| row_value(row, key).and_then(Json::as_f64);
        return match (
            get("min"),
            get("max"),
            row_value(row, "count").and_then(Json::as_u64),
        ) {
            (Some(min), Some(max), Some(count)) if count > 0 => {
                Ok(vec![(min, 1), (max, count.saturating_sub(1).max(1))])
            }
            _ => Err(zero_features()),
        };
    }
    let mut group_by = vec![name];
    let normalizer = match normalization {
        Normalization::Field(by) => {
            let (by, by_type) = field_of(layer, by)?;
            if !is_numeric(by_type) {
                return Err(bad(format!(
                    "Cannot use non-numeric normalizationField, {by}"
                )));
            }
            Some(by)
        }
        _ => None,
    };
    if let Some(by) = &normalizer {
        group_by.push(by.as_str());
    }
    let rows = statistics_rows(
        context,
        statistics_request(request, &count_statistic(layer), &group_by),
        &group_by,
        MAX_CLASSIFIED_VALUES,
        || {
            format!(
                "{name} has more than {MAX_CLASSIFIED_VALUES} distinct values: use esriClassifyEqualInterval, or classify fewer features (a where clause)"
            )
        },
    )
    .await?;
    let values: Vec<(f64, u64)> = rows
        .iter()
        .filter_map(|row| {
            let value = row_value(row, name)?.as_f64()?;
            let count = row_value(row, "count")?.as_u64()?;
            let value = match &normalizer {
                Some(by) => {
                    let by = row_value(row, by)?.as_f64()?;
                    value / if by > 0.0 { by } else { 1.0 }
                }
                None => value,
            };
            Some((value, count))
        })
        .collect();
    sorted(values, normalization)
}

/// A `classBreaks` renderer of `values` (sorted, distinct, non-empty).
fn class_breaks(
    values: &[(f64, u64)],
    name: &str,
    method: Method,
    method_name: &str,
    breaks: u64,
    ramp: Ramp,
    symbols: &Symbols,
) -> Result<Json, GeoservicesError> {
    let total: u64 = values.iter().map(|&(_, count)| count).sum();
    // No more classes than values (winnow).
    let classes = usize::try_from(breaks.min(total).max(1)).unwrap_or(1);
    let (Some(&(min, _)), Some(&(max, _))) = (values.first(), values.last()) else {
        return Err(zero_features());
    };
    let bounds = match method {
        Method::EqualInterval => equal_interval(min, max, classes),
        Method::Quantile => quantile(values, classes),
        Method::NaturalBreaks => {
            if values.len() > MAX_NATURAL_BREAKS_VALUES {
                return Err(bad(format!(
                    "natural breaks of more than {MAX_NATURAL_BREAKS_VALUES} distinct values ({name} has {}): use esriClassifyQuantile or esriClassifyEqualInterval, or classify fewer features",
                    values.len()
                )));
            }
            natural_breaks(values, classes)
        }
    };
    let ranges = ranges(&bounds);
    let colors = ramp.colors(ranges.len());
    let infos: Vec<Json> = ranges
        .iter()
        .zip(colors)
        .map(|(&(low, high), rgb)| {
            json!({
                "classMinValue": number(low),
                "classMaxValue": number(high),
                "label": format!("{}-{}", label_number(low), label_number(high)),
                "description": "",
                "symbol": symbols.symbol(rgb),
            })
        })
        .collect();
    Ok(json!({
        "type": "classBreaks",
        "field": name,
        "classificationMethod": method_name,
        "minValue": number(min),
        "classBreakInfos": infos,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_intervals_match_the_reference_koop() {
        // Koop's answer for the five sample populations in three classes.
        let bounds = equal_interval(134_100.0, 1_693_000.0, 3);
        let ranges = ranges(&bounds);
        assert_eq!(
            ranges,
            vec![
                (134_100.0, 653_733.333_333_333_3),
                (653_733.333_333_333_4, 1_173_366.666_666_666_5),
                (1_173_366.666_666_666_5, 1_693_000.0),
            ]
        );
    }

    #[test]
    fn quantiles_and_natural_breaks_of_weighted_values() {
        // 1..=9 once each, and 100 three times.
        let mut values: Vec<(f64, u64)> = (1..=9).map(|v| (f64::from(v), 1)).collect();
        values.push((100.0, 3));
        assert_eq!(quantile(&values, 3), vec![1.0, 4.0, 8.0, 100.0]);
        // The outlier gets a class of its own.
        assert_eq!(natural_breaks(&values, 2), vec![1.0, 9.0, 100.0]);
        let clusters = [
            (1.0, 1),
            (2.0, 1),
            (3.0, 1),
            (10.0, 1),
            (11.0, 1),
            (12.0, 1),
            (30.0, 1),
        ];
        assert_eq!(natural_breaks(&clusters, 3), vec![1.0, 3.0, 12.0, 30.0]);
    }

    #[test]
    fn ramps_interpolate_as_chroma_does() {
        let ramp = Ramp {
            from: [0.0, 255.0, 0.0],
            to: [0.0, 0.0, 255.0],
            space: ColorSpace::Hsl,
        };
        // Koop's colours for three classes.
        assert_eq!(
            ramp.colors(3),
            vec![[0, 255, 0], [0, 255, 255], [0, 0, 255]]
        );
        assert_eq!(ramp.colors(1), vec![[0, 255, 255]]);
        for space in [ColorSpace::Lab, ColorSpace::Lch] {
            let ramp = Ramp { space, ..ramp };
            let colors = ramp.colors(4);
            assert_eq!(colors[0], [0, 255, 0], "{space:?}");
            assert_eq!(colors[3], [0, 0, 255], "{space:?}");
            assert_ne!(colors[1], colors[2]);
        }
    }

    #[test]
    fn definitions_are_checked() {
        for bad in [
            None,
            Some("[]"),
            Some(r#"{"type":"pie"}"#),
            Some(r#"{"type":"uniqueValueDef"}"#),
            Some(r#"{"type":"uniqueValueDef","uniqueValueFields":["a","b","c","d"]}"#),
            Some(r#"{"type":"classBreaksDef"}"#),
            Some(r#"{"type":"classBreaksDef","classificationField":"x","breakCount":0}"#),
            Some(
                r#"{"type":"classBreaksDef","classificationField":"x","classificationMethod":"esriClassifyStandardDeviation"}"#,
            ),
            Some(
                r#"{"type":"classBreaksDef","classificationField":"x","baseSymbol":{"type":"esriPMS"}}"#,
            ),
            Some(
                r#"{"type":"classBreaksDef","classificationField":"x","colorRamp":{"type":"multipart"}}"#,
            ),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let parsed = parse(Some(
            r#"{"type":"classBreaksDef","classificationField":"x","classificationMethod":"esriClassifyNaturalBreaks","breakCount":4,"normalizationType":"esriNormalizeByField","normalizationField":"y"}"#,
        ))
        .expect("a valid definition");
        assert!(matches!(
            parsed.classification,
            Classification::ClassBreaks { method: Method::NaturalBreaks, breaks: 4, normalization: Normalization::Field(ref by), .. } if by == "y"
        ));
    }
}
