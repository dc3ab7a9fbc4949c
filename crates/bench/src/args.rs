//! Command-line arguments (clap), shared by the parent run and the hidden
//! `child` mode that runs one measurement.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Side-by-side benchmark of iqdb-persist, the published iqdb-persist 1.0
/// and the raw disk, one fresh process per measurement.
///
/// Prints markdown tables (medians, ratios to the raw disk and to 1.0) on
/// stdout; with `--charts DIR` also draws them as SVG charts into DIR.
#[derive(Debug, Parser)]
#[command(
    name = "iqdb-persist-bench",
    after_help = "Examples:\n  \
        iqdb-persist-bench --runs 5 --charts docs/charts > bench.md\n  \
        iqdb-persist-bench --runs 3 --sizes 10000x128 --wal-ops 2000\n  \
        iqdb-persist-bench --smoke"
)]
pub struct Args {
    /// Measurements per figure; each figure is their median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Snapshot sizes, as VECTORSxDIM, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_size,
          default_value = "10000x128,50000x768,200000x768")]
    pub sizes: Vec<(u64, usize)>,
    /// Snapshot stores carry 5-7 metadata fields per record.
    #[arg(long)]
    pub metadata: bool,
    /// Where the benchmark's files go (removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("iqdb-persist-bench"))]
    pub dir: PathBuf,
    /// Durable single inserts per measurement (batches: ten times as many
    /// operations, in batches of 1,000).
    #[arg(long, default_value_t = 2_000)]
    pub wal_ops: u64,
    /// Records in the log that the replay measurement loads.
    #[arg(long, default_value_t = 200_000)]
    pub replay_ops: u64,
    /// Also draw the main comparisons as SVG charts into this directory
    /// (created if missing; existing charts of the same names are replaced).
    #[arg(long, value_name = "DIR")]
    pub charts: Option<PathBuf>,
    /// A quick check that everything runs: one run, tiny sizes. Overrides
    /// --runs, --sizes, --wal-ops and --replay-ops.
    #[arg(long)]
    pub smoke: bool,
    #[command(subcommand)]
    pub child: Option<Child>,
}

/// The hidden mode in which the benchmark re-executes itself.
#[derive(Debug, Subcommand)]
pub enum Child {
    /// Runs one measurement (a JSON task) and prints its sample as JSON.
    #[command(hide = true)]
    Child {
        /// The task, as JSON.
        task: String,
    },
}

impl Args {
    /// Applies `--smoke`.
    pub fn resolved(mut self) -> Self {
        if self.smoke {
            self.runs = 1;
            self.sizes = vec![(300, 16)];
            self.wal_ops = 50;
            self.replay_ops = 500;
        }
        self
    }
}

/// `VECTORSxDIM`, both positive.
fn parse_size(s: &str) -> Result<(u64, usize), String> {
    let (n, d) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?} is not VECTORSxDIM (such as 10000x128)"))?;
    let n: u64 = n.parse().map_err(|e| format!("{s:?}: vectors: {e}"))?;
    let d: usize = d.parse().map_err(|e| format!("{s:?}: dim: {e}"))?;
    if n == 0 || d == 0 {
        return Err(format!("{s:?}: vectors and dim must be positive"));
    }
    Ok((n, d))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails loudly")]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_bad_ones_are_refused() {
        let args = Args::try_parse_from(["bench", "--sizes", "10x4,200x768"]).unwrap();
        assert_eq!(args.sizes, vec![(10, 4), (200, 768)]);
        for bad in ["10", "x4", "0x4", "10x0", "10xa"] {
            assert!(
                Args::try_parse_from(["bench", "--sizes", bad]).is_err(),
                "{bad} accepted"
            );
        }
        assert!(Args::try_parse_from(["bench", "--runs", "0"]).is_err());
    }

    #[test]
    fn smoke_overrides_the_sizes() {
        let args = Args::try_parse_from(["bench", "--smoke", "--runs", "7"])
            .unwrap()
            .resolved();
        assert_eq!((args.runs, args.sizes.clone()), (1, vec![(300, 16)]));
    }

    #[test]
    fn child_mode_takes_its_task() {
        let args = Args::try_parse_from(["bench", "child", "{}"]).unwrap();
        assert!(matches!(args.child, Some(Child::Child { task }) if task == "{}"));
    }
}
