//! Prints every Switchboard CRD as YAML documents separated by `---`, in the sorted file-name
//! order of `crds/` (so `cat crds/*.yaml` equals this output).
//!
//! `crdgen --write <dir>` writes one file per CRD instead.

use std::path::PathBuf;

use anyhow::Context;
use switchboard_operator::crd;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => {
            print!("{}", crd::crd_yaml().context("serializing the CRDs")?);
        }
        (Some("--write"), Some(dir)) => {
            let dir = PathBuf::from(dir);
            for (file, crd) in crd::crds() {
                let path = dir.join(file);
                let yaml = crd::crd_document(&crd).context("serializing a CRD")?;
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        _ => anyhow::bail!("usage: crdgen [--write <dir>]"),
    }
    Ok(())
}
