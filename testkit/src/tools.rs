//! Where the kit finds the binaries it starts.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The repository root: `$SWITCHBOARD_REPO`, else the parent of the manifest directory cargo
/// passes at run time (a cached test binary may have been built in another checkout), else of
/// this crate's.
pub fn repo_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWITCHBOARD_REPO") {
        return PathBuf::from(dir);
    }
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `$SWITCHBOARD_TOOLS_DIR/bin`, else `<repo>/e2e/.tools/bin`.
pub fn tools_bin() -> PathBuf {
    std::env::var_os("SWITCHBOARD_TOOLS_DIR")
        .map_or_else(|| repo_root().join("e2e/.tools"), PathBuf::from)
        .join("bin")
}

/// The etcd binary: `$SWITCHBOARD_ETCD_BIN`, the tools dir, `PATH`, `<repo>/e2e/.tools/bin`.
pub fn etcd_bin() -> Result<PathBuf, Error> {
    find("etcd", "SWITCHBOARD_ETCD_BIN", None)
}

/// The kube-apiserver binary: `$SWITCHBOARD_KUBE_APISERVER_BIN`, beside the etcd binary, the
/// tools dir, `PATH`, `<repo>/e2e/.tools/bin`.
pub fn kube_apiserver_bin() -> Result<PathBuf, Error> {
    let beside_etcd = etcd_bin()
        .ok()
        .and_then(|etcd| Some(etcd.parent()?.join("kube-apiserver")));
    find(
        "kube-apiserver",
        "SWITCHBOARD_KUBE_APISERVER_BIN",
        beside_etcd,
    )
}

fn find(name: &'static str, env: &str, preferred: Option<PathBuf>) -> Result<PathBuf, Error> {
    if let Some(bin) = std::env::var_os(env) {
        return Ok(PathBuf::from(bin));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    preferred
        .into_iter()
        .chain([tools_bin().join(name)])
        .chain(on_path)
        .chain([repo_root().join("e2e/.tools/bin").join(name)])
        .find(|candidate| candidate.is_file())
        .ok_or(Error::MissingTool {
            name,
            hint: "set SWITCHBOARD_TOOLS_DIR (or SWITCHBOARD_ETCD_BIN), put it on PATH, or run e2e/scripts/build-tools",
        })
}
