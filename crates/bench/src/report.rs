//! What a run measured, and its markdown tables (comfy-table, the CLI's
//! table crate, with its markdown preset).

use std::collections::BTreeMap;

use comfy_table::{Table, presets::ASCII_MARKDOWN};

use crate::{Engine, Scheme, Summary};

/// One snapshot size: every engine and scheme, and the raw disk.
pub struct SnapshotResults {
    pub n: u64,
    pub dim: usize,
    pub metadata: bool,
    /// Uncompressed payload bytes.
    pub payload: u64,
    pub raw_write: Summary,
    pub raw_read: Summary,
    /// (save, load) per engine and scheme.
    pub results: BTreeMap<(Engine, Scheme), (Summary, Summary)>,
}

impl SnapshotResults {
    /// Payload size in MB, for titles and chart labels.
    pub fn payload_mb(&self) -> f64 {
        self.payload as f64 / 1e6
    }
}

/// The write-ahead log measurements.
pub struct WalResults {
    pub dim: usize,
    /// Bytes of one logged insert: the raw baseline appends this much.
    pub record: usize,
    pub raw_append: Summary,
    /// Durable single inserts per engine.
    pub single: Vec<(Engine, Summary)>,
    /// Batches of 1,000, one fsync each (this crate).
    pub batch: Summary,
    /// Replay per engine, with metadata or not.
    pub replay: Vec<(Engine, bool, Summary)>,
    /// Inserting the decoded records into an empty index, with metadata or not.
    pub ceilings: Vec<(bool, Summary)>,
    pub replay_ops: u64,
}

impl WalResults {
    /// The 1.0 single-insert figure, the reference of the "vs 1.0" column.
    pub fn v1_single(&self) -> Summary {
        self.single
            .iter()
            .find(|(e, _)| *e == Engine::V1)
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }
}

fn markdown(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(ASCII_MARKDOWN)
        .set_header(header.to_vec());
    table
}

/// The markdown table of one snapshot size, with its heading.
pub fn snapshot_table(s: &SnapshotResults) -> String {
    let mut table = markdown(&[
        "engine",
        "compression",
        "save MB/s",
        "save vs raw",
        "save vs 1.0",
        "load MB/s",
        "load vs raw",
        "load vs 1.0",
        "peak MiB above index (save / load)",
        "file MB",
    ]);
    table.add_row(vec![
        "raw disk".to_string(),
        "write+fsync+rename / read into fresh buffer".to_string(),
        format!("{:.0}", s.raw_write.mb_per_s()),
        "1.00".to_string(),
        String::new(),
        format!("{:.0}", s.raw_read.mb_per_s()),
        "1.00".to_string(),
        String::new(),
        String::new(),
        format!("{:.0}", s.payload_mb()),
    ]);
    for scheme in Scheme::ALL {
        for engine in Engine::ALL {
            let Some((save, load)) = s.results.get(&(engine, scheme)) else {
                continue;
            };
            let (v1_save, v1_load) = s
                .results
                .get(&(Engine::V1, scheme))
                .copied()
                .unwrap_or_default();
            table.add_row(vec![
                engine.label().to_string(),
                scheme.label().to_string(),
                format!("{:.0}", save.mb_per_s()),
                format!("{:.2}", s.raw_write.seconds / save.seconds),
                format!("{:.2}×", v1_save.seconds / save.seconds),
                format!("{:.0}", load.mb_per_s()),
                format!("{:.2}", s.raw_read.seconds / load.seconds),
                format!("{:.2}×", v1_load.seconds / load.seconds),
                format!("{:.1} / {:.1}", save.extra_mib, load.extra_mib),
                format!("{:.0}", save.file_bytes as f64 / 1e6),
            ]);
        }
    }
    format!(
        "### Snapshots: {} × {} f32 with ids{} ({:.0} MB payload)\n\n{table}\n",
        s.n,
        s.dim,
        if s.metadata {
            " and 5-7 metadata fields each"
        } else {
            ""
        },
        s.payload_mb()
    )
}

/// The markdown table of the log measurements, with its heading.
pub fn wal_table(w: &WalResults) -> String {
    let mut table = markdown(&["what", "engine", "rate", "vs raw append+fsync", "vs 1.0"]);
    let single = "durable single insert (`Always`)";
    let raw = w.raw_append.rate();
    let v1 = w.v1_single().rate();
    table.add_row(vec![
        single.to_string(),
        format!("raw append {} B + fsync", w.record),
        format!("{raw:.0}/s"),
        "1.00".to_string(),
        String::new(),
    ]);
    for (engine, s) in &w.single {
        table.add_row(vec![
            single.to_string(),
            engine.label().to_string(),
            format!("{:.0}/s", s.rate()),
            format!("{:.2}", s.rate() / raw),
            format!("{:.2}×", s.rate() / v1),
        ]);
    }
    table.add_row(vec![
        "batch of 1,000 inserts, one fsync".to_string(),
        Engine::Ours.label().to_string(),
        format!("{:.0}/s", w.batch.rate()),
        format!("{:.1}", w.batch.rate() / raw),
        format!("{:.1}×", w.batch.rate() / v1),
    ]);
    for (metadata, ceiling) in &w.ceilings {
        let what = if *metadata {
            "vectors and 5-7 metadata fields"
        } else {
            "vectors only"
        };
        let v1 = w
            .replay
            .iter()
            .find(|(e, m, _)| *e == Engine::V1 && m == metadata)
            .map(|(_, _, s)| *s)
            .unwrap_or_default();
        table.add_row(vec![
            format!(
                "replay ceiling: the same records inserted into an empty index from memory, {what}"
            ),
            "(index only)".to_string(),
            format!("{:.0}/s", ceiling.rate()),
            String::new(),
            String::new(),
        ]);
        for (engine, _, s) in w.replay.iter().filter(|(_, m, _)| m == metadata) {
            table.add_row(vec![
                format!(
                    "replay {} records, {what} ({:.0} MB log), peak {:.1} MiB above index",
                    w.replay_ops,
                    s.file_bytes as f64 / 1e6,
                    s.extra_mib
                ),
                engine.label().to_string(),
                format!("{:.0}/s", s.rate()),
                format!("{:.2} of ceiling", s.rate() / ceiling.rate()),
                format!("{:.2}×", s.rate() / v1.rate()),
            ]);
        }
    }
    format!("### Write-ahead log, dim {}\n\n{table}\n", w.dim)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails loudly")]
mod tests {
    use super::*;

    fn summary(seconds: f64, units: u64) -> Summary {
        Summary {
            seconds,
            units,
            extra_mib: 1.5,
            file_bytes: units,
        }
    }

    #[test]
    fn snapshot_table_has_a_row_per_engine_and_the_ratios() {
        let mut results = BTreeMap::new();
        results.insert(
            (Engine::Ours, Scheme::None),
            (summary(1.0, 2_000_000), summary(1.0, 2_000_000)),
        );
        results.insert(
            (Engine::V1, Scheme::None),
            (summary(4.0, 2_000_000), summary(2.0, 2_000_000)),
        );
        let s = SnapshotResults {
            n: 10,
            dim: 4,
            metadata: false,
            payload: 2_000_000,
            raw_write: summary(0.5, 2_000_000),
            raw_read: summary(0.5, 2_000_000),
            results,
        };
        let text = snapshot_table(&s);
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
        // header, separator, raw disk, two engines
        assert_eq!(rows.len(), 5, "{text}");
        let ours = rows.iter().find(|r| r.contains("1.1 (v3)")).unwrap();
        assert!(ours.contains("4.00×") && ours.contains("2.00×"), "{ours}");
        assert!(ours.contains("| 0.50 "), "{ours}");
    }
}
