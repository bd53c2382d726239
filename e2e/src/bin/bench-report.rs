//! `bench-report`: `render` writes the main generated section of docs/benchmarks.md and its
//! plots under docs/img from what `e2e/bench` recorded; `criterion` turns criterion's output
//! directory into the small JSON file kept with the records; `get` prints one field of the
//! bench's JSON line (read from stdin) for the script's bounded search.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use switchboard_e2e::bench_report::markdown::{Inputs, generate, splice};
use switchboard_e2e::bench_report::records::{
    Record, criterion_estimates, json_document, last_json_object, lookup,
};

#[derive(Parser, Debug)]
#[command(about = "Benchmark report: docs/benchmarks.md tables and docs/img plots")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Render the report.
    Render {
        /// results.jsonl written by e2e/bench.
        #[arg(long)]
        results: PathBuf,
        /// The document whose generated section is replaced.
        #[arg(long, default_value = "docs/benchmarks.md")]
        doc: PathBuf,
        /// Where the SVG plots go.
        #[arg(long, default_value = "docs/img")]
        img: PathBuf,
        /// The plots' directory as linked from the document.
        #[arg(long, default_value = "img")]
        img_link: String,
        /// operator-bench's JSON output.
        #[arg(long)]
        operator: Option<PathBuf>,
        /// Criterion estimates as written by `bench-report criterion`.
        #[arg(long)]
        criterion_json: Option<PathBuf>,
    },
    /// Print criterion's median estimates under DIR (target/criterion) as one JSON object.
    Criterion {
        /// criterion's output directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print field KEY (dot path) of the last JSON object on stdin; `null` when absent.
    Get {
        /// The field, e.g. `relay_p99_ms`.
        key: String,
    },
}

fn main() -> Result<()> {
    match Args::parse().command {
        Command::Get { key } => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            let Some(value) = last_json_object(&text) else {
                bail!("no JSON object on stdin");
            };
            println!(
                "{}",
                lookup(&value, &key).unwrap_or(serde_json::Value::Null)
            );
        }
        Command::Criterion { dir } => {
            let estimates = criterion_estimates(&dir)?;
            println!("{}", serde_json::to_string_pretty(&estimates)?);
        }
        Command::Render {
            results,
            doc,
            img,
            img_link,
            operator,
            criterion_json,
        } => {
            let mut inputs = Inputs {
                records: Record::load(&results)?,
                ..Inputs::default()
            };
            if let Some(path) = operator {
                inputs.operator = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))
                    .and_then(|t| {
                        json_document(&t)
                            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
                            .ok_or_else(|| "operator-bench printed no result".into())
                    });
            }
            if let Some(path) = criterion_json {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                inputs.criterion = serde_json::from_str::<BTreeMap<String, f64>>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
            }
            std::fs::create_dir_all(&img).with_context(|| format!("creating {}", img.display()))?;
            let generated = generate(&inputs, &img, &img_link)?;
            let current = std::fs::read_to_string(&doc)
                .with_context(|| format!("reading {}", doc.display()))?;
            std::fs::write(&doc, splice(&current, &generated)?)
                .with_context(|| format!("writing {}", doc.display()))?;
            eprintln!(
                "bench-report: wrote {} and plots in {}",
                doc.display(),
                img.display()
            );
        }
    }
    Ok(())
}
