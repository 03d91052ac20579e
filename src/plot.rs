//! The benchmark runner's two plots (`rthreads-bench`), drawn as SVG with plotters:
//!
//! - **speedup**: each kernel's speedup over its `std::thread` baseline, by threads in all, on a
//!   logarithmic scale (the kernels span four orders of magnitude). A solid line is the kernel on
//!   rthreads (`nodes × threads per node` threads); a dashed line in the same colour and with the
//!   same marker, hollow, is the kernel on `std::thread` in one process, from the baseline to as
//!   many threads as this machine has CPUs: what the hardware allows without a cluster.
//! - **messages**: messages sent per node, by node count, also logarithmic (a run with no message,
//!   such as one node, has no point).
//!
//! Every kernel has its own colour and its own marker (sixteen of each), so no two lines look
//! alike even to a reader who cannot tell the colours apart. The legend is outside the plot.

use std::collections::BTreeSet;

use plotters::coord::CoordTranslate;
use plotters::coord::combinators::WithKeyPoints;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

/// One rthreads run of a kernel, as the plots need it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClusterPoint {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Threads in all (nodes × threads per node).
    pub threads: usize,
    /// The baseline's wall time over this run's.
    pub speedup: f64,
    /// Messages sent, averaged over the nodes.
    pub msgs_per_node: f64,
}

/// What the plots show of one kernel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelFigures {
    /// The kernel's name.
    pub kernel: String,
    /// Its rthreads runs, one per node count.
    pub cluster: Vec<ClusterPoint>,
    /// Its `std::thread` runs in one process, as (threads, speedup over the baseline): the
    /// baseline itself (speedup 1) and any run with more threads. Empty: no dashed line.
    pub std: Vec<(usize, f64)>,
}

/// Sixteen colours that stay apart on white (the ten of matplotlib's `tab10`, black, a dark gold,
/// navy, dark olive, wine and sea green).
const COLOURS: [RGBColor; 16] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x00, 0x00, 0x00),
    RGBColor(0xb8, 0x86, 0x0b),
    RGBColor(0x00, 0x33, 0x80),
    RGBColor(0x55, 0x6b, 0x2f),
    RGBColor(0x80, 0x00, 0x40),
    RGBColor(0x00, 0x80, 0x60),
];

/// Marker shapes, all outlines (so a hollow one differs from a filled one); filled or hollow,
/// sixteen markers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    TriangleLeft,
    TriangleRight,
    Pentagon,
}

const SHAPES: [Shape; 8] = [
    Shape::Circle,
    Shape::Square,
    Shape::TriangleUp,
    Shape::Diamond,
    Shape::TriangleDown,
    Shape::TriangleLeft,
    Shape::TriangleRight,
    Shape::Pentagon,
];

/// How kernel number `i` is drawn: its colour, its marker's shape, and whether the marker is
/// filled. The first sixteen kernels differ in all three, so no two of them share a colour or a
/// marker.
fn look(i: usize) -> (RGBColor, Shape, bool) {
    (COLOURS[i % COLOURS.len()], SHAPES[i % SHAPES.len()], (i / SHAPES.len()).is_multiple_of(2))
}

/// The half-size of a marker, in pixels.
const R: i32 = 5;

/// A piece of a marker, in pixels around its centre.
enum Part {
    /// A circle of radius [`R`].
    Dot,
    /// A polygon, filled or outlined.
    Fill(Vec<(i32, i32)>),
}

/// The pieces of a marker of `shape` ([`draw_marker`] draws a polygon as an outline for a hollow
/// marker).
fn parts(shape: Shape) -> Vec<Part> {
    let polygon = |points: Vec<(i32, i32)>| vec![Part::Fill(points)];
    match shape {
        Shape::Circle => vec![Part::Dot],
        Shape::Square => polygon(vec![(-R + 1, -R + 1), (R - 1, -R + 1), (R - 1, R - 1), (-R + 1, R - 1)]),
        Shape::TriangleUp => polygon(vec![(0, -R - 1), (R + 1, R), (-R - 1, R)]),
        Shape::TriangleDown => polygon(vec![(0, R + 1), (R + 1, -R), (-R - 1, -R)]),
        Shape::Diamond => polygon(vec![(0, -R - 1), (R + 1, 0), (0, R + 1), (-R - 1, 0)]),
        Shape::TriangleLeft => polygon(vec![(-R - 1, 0), (R, -R - 1), (R, R + 1)]),
        Shape::TriangleRight => polygon(vec![(R + 1, 0), (-R, -R - 1), (-R, R + 1)]),
        Shape::Pentagon => polygon(vec![(0, -R - 1), (R + 1, -1), (R - 1, R), (-R + 1, R), (-R - 1, -1)]),
    }
}

/// Draws a marker of `shape` at `at` on `area` (the plot, or the legend), hollow unless `filled`.
fn draw_marker<DB: DrawingBackend, CT: CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    at: CT::From,
    shape: Shape,
    filled: bool,
    colour: RGBColor,
) -> Result<(), String>
where
    CT::From: Clone,
{
    let style = if filled { colour.filled() } else { colour.stroke_width(2) };
    for part in parts(shape) {
        let at = EmptyElement::at(at.clone());
        match part {
            Part::Dot => area.draw(&(at + Circle::new((0, 0), R, style))),
            Part::Fill(points) if filled => area.draw(&(at + Polygon::new(points, style))),
            Part::Fill(mut points) => {
                points.push(points[0]);
                area.draw(&(at + PathElement::new(points, style)))
            }
        }
        .map_err(err)?;
    }
    Ok(())
}

/// `1`, `2`, `5` times the powers of ten between `low` and `high`, or only the powers of ten if
/// that would be too many labels.
fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let (first, last) = (low.log10().floor() as i32, high.log10().ceil() as i32);
    let steps: &[f64] = if last - first > 4 { &[1.0] } else { &[1.0, 2.0, 5.0] };
    (first..=last)
        .flat_map(|e| steps.iter().map(move |m| m * 10f64.powi(e)))
        .filter(|v| (low..=high).contains(v))
        .collect()
}

/// A tick label: as many decimals as a value below 1 needs, `k` and `M` for large values.
fn tick_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let decimals = (-v.log10() - 1e-9).ceil() as usize;
        format!("{v:.decimals$}")
    }
}

/// The range a logarithmic axis needs to show `values` (positive ones only), with some room.
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if low.is_finite() { (low / 1.6, high * 1.6) } else { (0.5, 2.0) }
}

/// Error text from a plotters drawing error.
fn err(e: impl std::fmt::Display) -> String {
    format!("drawing the plot: {e}")
}

/// Size of both plots, in pixels.
const SIZE: (u32, u32) = (960, 540);
/// Width of the legend column on the right.
const LEGEND: u32 = 210;

/// How a legend entry that is not a kernel draws its sample line.
#[derive(Clone, Copy, Debug)]
enum Sample {
    /// A line as the kernels' rthreads lines are drawn.
    Solid,
    /// A line as their std::thread lines are drawn.
    Dashed,
    /// The thin grey line of the baseline.
    Thin,
}

/// The thin grey line of the baseline (speedup 1).
fn thin() -> ShapeStyle {
    RGBColor(0xa0, 0xa0, 0xa0).stroke_width(1)
}

/// Draws the legend in `area`: a line and a marker per kernel, then the `extra` entries, each a
/// sample line and its text.
fn legend(area: &Area<'_>, kernels: &[KernelFigures], extra: &[(&str, Sample)]) -> Result<(), String> {
    let font = ("sans-serif", 14).into_font();
    let mut y = 60;
    for (i, k) in kernels.iter().enumerate() {
        let (colour, shape, filled) = look(i);
        area.draw(&PathElement::new(vec![(8, y), (44, y)], colour.stroke_width(2))).map_err(err)?;
        draw_marker(area, (26, y), shape, filled, colour)?;
        area.draw(&Text::new(k.kernel.clone(), (52, y - 8), font.clone())).map_err(err)?;
        y += 22;
    }
    y += 10;
    for &(text, sample) in extra {
        let grey = RGBColor(0x55, 0x55, 0x55).stroke_width(2);
        let line = vec![(8, y), (44, y)];
        match sample {
            Sample::Solid => area.draw(&PathElement::new(line, grey)),
            Sample::Dashed => area.draw(&DashedPathElement::new(line, 7, 5, grey)),
            Sample::Thin => area.draw(&PathElement::new(line, thin())),
        }
        .map_err(err)?;
        area.draw(&Text::new(text.to_owned(), (52, y - 8), font.clone())).map_err(err)?;
        y += 22;
    }
    Ok(())
}

/// The drawing area of a plot and of its legend, with `note` (where the figures come from) in
/// small print under both.
fn frame<'b>(root: &Area<'b>, note: &str) -> Result<(Area<'b>, Area<'b>), String> {
    let (figure, foot) = root.split_vertically(SIZE.1 - 20);
    foot.draw(&Text::new(
        note.to_owned(),
        (12, 2),
        ("sans-serif", 12).into_font().color(&RGBColor(0x60, 0x60, 0x60)),
    ))
    .map_err(err)?;
    Ok(figure.split_horizontally(SIZE.0 - LEGEND))
}

/// A drawing area of an SVG plot, in pixels.
type Area<'b> = DrawingArea<SVGBackend<'b>, plotters::coord::Shift>;

/// A chart with both axes on a log scale: `xs` (thread or node counts) as the x axis's key
/// points, `y` the y range, `axes` the two axis descriptions; its mesh drawn.
fn log_chart<'b>(
    plot: &Area<'b>,
    title: &str,
    xs: &BTreeSet<usize>,
    (y_low, y_high): (f64, f64),
    [x_desc, y_desc]: [&str; 2],
) -> Result<ChartContext<'b, SVGBackend<'b>, LogChart>, String> {
    let (x_low, x_high) = (*xs.first().unwrap_or(&1) as f64 / 1.25, *xs.last().unwrap_or(&1) as f64 * 1.25);
    let mut chart = ChartBuilder::on(plot)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(46)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (x_low..x_high).log_scale().with_key_points(xs.iter().map(|&x| x as f64).collect()),
            (y_low..y_high).log_scale().with_key_points(log_ticks(y_low, y_high)),
        )
        .map_err(err)?;
    let label = |v: &f64| tick_label(*v);
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&label)
        .y_label_formatter(&label)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(0xe4, 0xe4, 0xe4))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// The coordinates of a [`log_chart`].
type LogChart = Cartesian2d<WithKeyPoints<LogCoord<f64>>, WithKeyPoints<LogCoord<f64>>>;

/// The speedup plot: `title` above it, `note` (where the figures come from; may be empty) in small
/// print below.
///
/// # Errors
/// If plotters cannot draw it (it draws into a string, so only on a bug).
pub fn speedup_svg(kernels: &[KernelFigures], title: &str, note: &str) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (plot, side) = frame(&root, note)?;
        let threads: BTreeSet<usize> = kernels
            .iter()
            .flat_map(|k| k.cluster.iter().map(|p| p.threads).chain(k.std.iter().map(|s| s.0)))
            .collect();
        let (y_low, y_high) = log_range(
            kernels
                .iter()
                .flat_map(|k| k.cluster.iter().map(|p| p.speedup).chain(k.std.iter().map(|s| s.1)))
                .chain([1.0]),
        );
        let axes = [
            "threads in all (rthreads: nodes × threads per node)",
            "speedup over the std::thread baseline (log scale)",
        ];
        let mut chart = log_chart(&plot, title, &threads, (y_low, y_high), axes)?;
        // The baseline: speedup 1, across the whole x axis.
        let xr = chart.x_range();
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(xr.start, 1.0), (xr.end, 1.0)], thin())))
            .map_err(err)?;
        for (i, k) in kernels.iter().enumerate() {
            let (colour, shape, filled) = look(i);
            let mut std: Vec<(f64, f64)> = k.std.iter().map(|&(t, s)| (t as f64, s)).collect();
            std.sort_by(|a, b| a.0.total_cmp(&b.0));
            if std.len() > 1 {
                chart
                    .draw_series(DashedLineSeries::new(std.iter().copied(), 7, 5, colour.stroke_width(2)))
                    .map_err(err)?;
                for &p in &std[1..] {
                    draw_marker(chart.plotting_area(), p, shape, false, colour)?;
                }
            }
            let mut points: Vec<(f64, f64)> = k
                .cluster
                .iter()
                .filter(|p| p.speedup > 0.0 && p.speedup.is_finite())
                .map(|p| (p.threads as f64, p.speedup))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))
                .map_err(err)?;
            for &p in &points {
                draw_marker(chart.plotting_area(), p, shape, filled, colour)?;
            }
        }
        let mut extra = vec![("rthreads", Sample::Solid)];
        if kernels.iter().any(|k| k.std.len() > 1) {
            extra.push(("std::thread in one process", Sample::Dashed));
        }
        extra.push(("the baseline (speedup 1)", Sample::Thin));
        legend(&side, kernels, &extra)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The messages plot: messages sent per node by node count; `title` and `note` as for
/// [`speedup_svg`].
///
/// # Errors
/// If plotters cannot draw it (it draws into a string, so only on a bug).
pub fn messages_svg(kernels: &[KernelFigures], title: &str, note: &str) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (plot, side) = frame(&root, note)?;
        let nodes: BTreeSet<usize> = kernels.iter().flat_map(|k| k.cluster.iter().map(|p| p.nodes)).collect();
        let (y_low, y_high) =
            log_range(kernels.iter().flat_map(|k| k.cluster.iter().map(|p| p.msgs_per_node)));
        let axes = ["nodes (a single node sends none)", "messages sent per node (log scale)"];
        let mut chart = log_chart(&plot, title, &nodes, (y_low, y_high), axes)?;
        for (i, k) in kernels.iter().enumerate() {
            let (colour, shape, filled) = look(i);
            let mut points: Vec<(f64, f64)> = k
                .cluster
                .iter()
                .filter(|p| p.msgs_per_node > 0.0)
                .map(|p| (p.nodes as f64, p.msgs_per_node))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))
                .map_err(err)?;
            for &p in &points {
                draw_marker(chart.plotting_area(), p, shape, filled, colour)?;
            }
        }
        legend(&side, kernels, &[])?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernels(n: usize) -> Vec<KernelFigures> {
        (0..n)
            .map(|i| KernelFigures {
                kernel: format!("k{i}"),
                cluster: [1, 2, 4, 8]
                    .iter()
                    .map(|&nodes| ClusterPoint {
                        nodes,
                        threads: nodes,
                        speedup: (i + 1) as f64 / nodes as f64,
                        msgs_per_node: if nodes == 1 { 0.0 } else { (1000 * (i + 1) * nodes) as f64 },
                    })
                    .collect(),
                std: vec![(1, 1.0), (2, 1.0 + i as f64 / 12.0)],
            })
            .collect()
    }

    #[test]
    fn sixteen_kernels_never_share_a_colour_or_a_marker() {
        let looks: Vec<_> = (0..16).map(look).collect();
        for (i, a) in looks.iter().enumerate() {
            for b in &looks[i + 1..] {
                assert!(a.0 != b.0, "colour shared: {a:?} {b:?}");
                assert!((a.1, a.2) != (b.1, b.2), "marker shared: {a:?} {b:?}");
            }
        }
    }

    #[test]
    fn plots_are_svg_with_every_kernel_named() {
        let k = kernels(12);
        for svg in [speedup_svg(&k, "Speedup", "test").unwrap(), messages_svg(&k, "Messages", "").unwrap()] {
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{}", &svg[..80]);
            for f in &k {
                // plotters writes a text element's content on a line of its own.
                assert!(svg.lines().any(|l| l.trim() == f.kernel), "no legend entry for {}", f.kernel);
            }
        }
    }

    #[test]
    fn ticks_and_labels() {
        assert_eq!(log_ticks(0.3, 30.0), [0.5, 1.0, 2.0, 5.0, 10.0, 20.0]);
        assert_eq!(log_ticks(0.00009, 3000.0), [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]);
        let labels: Vec<String> = [0.0002, 0.5, 1.0, 20.0, 5000.0, 2e6].map(tick_label).to_vec();
        assert_eq!(labels, ["0.0002", "0.5", "1", "20", "5k", "2M"]);
    }
}
