//! SVG charts of the main comparisons (plotters, SVG backend only: no font
//! files or C libraries needed), drawn from the same results as the tables.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::report::{SnapshotResults, WalResults};
use crate::{Engine, Scheme};

/// One bar series: its name and one value per group.
struct Series {
    name: String,
    values: Vec<f64>,
}

const COLORS: [RGBColor; 5] = [
    RGBColor(120, 120, 120), // raw disk / baseline: grey
    RGBColor(31, 119, 180),  // 1.1 (v3)
    RGBColor(44, 160, 44),   // 1.1 (v2, compat)
    RGBColor(214, 39, 40),   // 1.0.0
    RGBColor(255, 127, 14),
];

/// Draws every chart into `dir` and returns the files written.
pub fn draw_all(
    dir: &Path,
    snapshots: &[SnapshotResults],
    wal: &WalResults,
) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let groups: Vec<String> = snapshots
        .iter()
        .flat_map(|s| {
            Scheme::ALL
                .iter()
                .map(move |scheme| format!("{:.0} MB, {}", s.payload_mb(), scheme.label()))
        })
        .collect();
    for (file, title, load) in [
        (
            "snapshot-save.svg",
            "Snapshot save, MB/s of payload (higher is better)",
            false,
        ),
        (
            "snapshot-load.svg",
            "Snapshot load, warm cache, MB/s of payload (higher is better)",
            true,
        ),
    ] {
        let mut series = vec![Series {
            name: if load {
                "raw disk: read into a fresh buffer".into()
            } else {
                "raw disk: write + fsync + rename".into()
            },
            values: snapshots
                .iter()
                .flat_map(|s| {
                    let raw = if load { s.raw_read } else { s.raw_write };
                    Scheme::ALL.iter().map(move |_| raw.mb_per_s())
                })
                .collect(),
        }];
        for engine in Engine::ALL {
            series.push(Series {
                name: engine.label().into(),
                values: snapshots
                    .iter()
                    .flat_map(|s| {
                        Scheme::ALL.iter().map(move |&scheme| {
                            s.results.get(&(engine, scheme)).map_or(0.0, |(save, l)| {
                                if load { l.mb_per_s() } else { save.mb_per_s() }
                            })
                        })
                    })
                    .collect(),
            });
        }
        let path = dir.join(file);
        grouped_bars(&path, title, "MB/s", &groups, &series, false)?;
        written.push(path);
    }

    // Peak memory: log scale, 1.0 holds whole payloads.
    let mut memory = Vec::new();
    for engine in Engine::ALL {
        for (what, load) in [("save", false), ("load", true)] {
            memory.push(Series {
                name: format!("{} {what}", engine.label()),
                values: snapshots
                    .iter()
                    .flat_map(|s| {
                        Scheme::ALL.iter().map(move |&scheme| {
                            s.results.get(&(engine, scheme)).map_or(0.0, |(save, l)| {
                                if load { l.extra_mib } else { save.extra_mib }
                            })
                        })
                    })
                    .collect(),
            });
        }
    }
    let path = dir.join("snapshot-memory.svg");
    grouped_bars(
        &path,
        "Peak memory above the index while saving / loading, MiB (log scale, lower is better)",
        "MiB",
        &groups,
        &memory,
        true,
    )?;
    written.push(path);

    let mut durable = vec![Series {
        name: format!("raw append {} B + fsync", wal.record),
        values: vec![wal.raw_append.rate()],
    }];
    for (engine, s) in &wal.single {
        durable.push(Series {
            name: engine.label().into(),
            values: vec![s.rate()],
        });
    }
    let path = dir.join("wal-durable-inserts.svg");
    grouped_bars(
        &path,
        &format!(
            "Durable single inserts per second, dim {}, FsyncPolicy::Always (higher is better)",
            wal.dim
        ),
        "inserts/s",
        &["one insert, one fsync".to_string()],
        &durable,
        false,
    )?;
    written.push(path);

    let replay_groups: Vec<String> = wal
        .ceilings
        .iter()
        .map(|(metadata, _)| {
            if *metadata {
                "vectors and 5-7 metadata fields".to_string()
            } else {
                "vectors only".to_string()
            }
        })
        .collect();
    let mut replay = vec![Series {
        name: "ceiling: inserting the decoded records, no log".into(),
        values: wal.ceilings.iter().map(|(_, s)| s.rate()).collect(),
    }];
    for engine in [Engine::Ours, Engine::V1] {
        replay.push(Series {
            name: engine.label().into(),
            values: wal
                .ceilings
                .iter()
                .map(|(metadata, _)| {
                    wal.replay
                        .iter()
                        .find(|(e, m, _)| *e == engine && m == metadata)
                        .map_or(0.0, |(_, _, s)| s.rate())
                })
                .collect(),
        });
    }
    let path = dir.join("wal-replay.svg");
    grouped_bars(
        &path,
        &format!(
            "Log replay at load, {} records, dim {}, records/s (higher is better)",
            wal.replay_ops, wal.dim
        ),
        "records/s",
        &replay_groups,
        &replay,
        false,
    )?;
    written.push(path);
    Ok(written)
}

/// A grouped bar chart: one group of bars per entry of `groups`, one bar
/// per series in each group, a legend below.
fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[Series],
    log_scale: bool,
) -> Result<(), String> {
    let width = (160 + groups.len() * (series.len() * 22 + 30)).max(640) as u32;
    let legend_rows = series.len().div_ceil(3) as u32;
    let root = SVGBackend::new(path, (width, 440 + legend_rows * 22)).into_drawing_area();
    draw(&root, title, y_label, groups, series, log_scale)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    root.present()
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn draw(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[Series],
    log_scale: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let legend_height = series.len().div_ceil(3) as u32 * 22 + 10;
    let (plot_area, legend_area) = root.split_vertically(root.dim_in_pixel().1 - legend_height);
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let mut builder = ChartBuilder::on(&plot_area);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(56)
        .y_label_area_size(70);
    if log_scale {
        let floor = 0.1;
        plot(
            &mut builder,
            (floor..max * 2.0).log_scale(),
            floor,
            y_label,
            groups,
            series,
        )?;
    } else {
        plot(&mut builder, 0.0..max * 1.1, 0.0, y_label, groups, series)?;
    }
    // The legend: three entries per row.
    let (legend_width, _) = legend_area.dim_in_pixel();
    let column = legend_width as i32 / 3;
    for (k, s) in series.iter().enumerate() {
        let x = 20 + (k % 3) as i32 * column;
        let y = 4 + (k / 3) as i32 * 22;
        let color = color_of(k, series.len());
        legend_area.draw(&Rectangle::new([(x, y), (x + 14, y + 14)], color.filled()))?;
        legend_area.draw(&Text::new(
            s.name.clone(),
            (x + 20, y + 1),
            ("sans-serif", 14).into_font(),
        ))?;
    }
    Ok(())
}

/// The mesh, the group labels and the bars, on a linear or a log y axis;
/// bars start at `floor` (the axis' bottom).
fn plot<Y>(
    builder: &mut ChartBuilder<'_, '_, SVGBackend<'_>>,
    y_range: Y,
    floor: f64,
    y_label: &str,
    groups: &[String],
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let per_group = series.len() + 1; // one empty slot between groups
    let slots = groups.len() * per_group;
    let label = |slot: &SegmentValue<usize>| -> String {
        match slot {
            SegmentValue::CenterOf(i) if i % per_group == series.len() / 2 => {
                groups.get(i / per_group).cloned().unwrap_or_default()
            }
            _ => String::new(),
        }
    };
    let mut chart = builder.build_cartesian_2d((0..slots).into_segmented(), y_range)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(slots + 1)
        .x_label_formatter(&label)
        .y_desc(y_label)
        .draw()?;
    for (k, s) in series.iter().enumerate() {
        let color = color_of(k, series.len());
        chart.draw_series(s.values.iter().enumerate().map(|(g, &v)| {
            Rectangle::new(
                [
                    (SegmentValue::Exact(g * per_group + k), floor),
                    (SegmentValue::Exact(g * per_group + k + 1), v.max(floor)),
                ],
                color.filled(),
            )
        }))?;
    }
    Ok(())
}

/// A series' color: the palette for up to five series; for more (save and
/// load of each engine), pairs share their engine's color, the second lighter.
fn color_of(k: usize, count: usize) -> RGBColor {
    if count <= COLORS.len() {
        return COLORS[k];
    }
    let RGBColor(r, g, b) = COLORS[(k / 2 + 1) % COLORS.len()];
    if k.is_multiple_of(2) {
        RGBColor(r, g, b)
    } else {
        let lighten = |c: u8| c + (255 - c) / 2;
        RGBColor(lighten(r), lighten(g), lighten(b))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails loudly")]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_an_svg_with_every_group_and_series_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let groups = vec!["small".to_string(), "large".to_string()];
        let series = vec![
            Series {
                name: "raw".into(),
                values: vec![10.0, 20.0],
            },
            Series {
                name: "ours".into(),
                values: vec![5.0, 19.0],
            },
        ];
        grouped_bars(&path, "title here", "MB/s", &groups, &series, false).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in ["title here", "small", "large", "raw", "ours", "MB/s"] {
            assert!(svg.contains(text), "{text} missing");
        }
        // 4 bars + the legend's 2 swatches, at least.
        assert!(svg.matches("<rect").count() >= 6);
        grouped_bars(&path, "log", "MiB", &groups, &series, true).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("log"));
    }
}
