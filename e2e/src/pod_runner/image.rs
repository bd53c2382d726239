//! Image → local binary mapping: the pod runner has no container runtime, so an image names a
//! program on this machine.
//!
//! An entry is `NAME=PATH` where `NAME` is an image repository's basename, optionally with a
//! tag: `signaling-node=/path/a` maps every `…/signaling-node:*` image, and
//! `signaling-node:v2=/path/b` maps only that tag (the more specific entry wins). Registry,
//! path and digest of the image are ignored: `ghcr.io/switchboard/signaling-node:1.2@sha256:…`
//! has basename `signaling-node` and tag `1.2`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Errors of the image map.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    /// An `--image-map` entry is not `NAME=PATH`.
    #[error(
        "image map entry {0:?} is not NAME=PATH (NAME is an image basename, optionally with :TAG)"
    )]
    BadEntry(String),
    /// The pod's image has no entry.
    #[error(
        "no image map entry for image {image:?} (add --image-map {basename}=<path to a binary>)"
    )]
    Unmapped {
        /// The image as written in the pod.
        image: String,
        /// The basename a mapping would use.
        basename: String,
    },
}

/// The parts of an image reference the map looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Last path segment of the repository, e.g. `signaling-node`.
    pub basename: String,
    /// Tag, if any (`latest` is not implied).
    pub tag: Option<String>,
}

impl ImageRef {
    /// Splits `[registry/][path/]name[:tag][@digest]`.
    pub fn parse(image: &str) -> Self {
        let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
        let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
        let last = &without_digest[last_slash..];
        let (basename, tag) = match last.split_once(':') {
            Some((name, tag)) if !tag.is_empty() => (name, Some(tag.to_string())),
            Some((name, _)) => (name, None),
            None => (last, None),
        };
        Self {
            basename: basename.to_string(),
            tag,
        }
    }
}

/// Map from image basename (and optional tag) to a program path.
#[derive(Debug, Clone, Default)]
pub struct ImageMap {
    entries: HashMap<String, PathBuf>,
}

impl ImageMap {
    /// Builds the map from `NAME=PATH` entries.
    pub fn from_entries<I, S>(entries: I) -> Result<Self, ImageError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut map = Self::default();
        for entry in entries {
            let entry = entry.as_ref();
            let (name, path) = entry
                .split_once('=')
                .filter(|(n, p)| !n.is_empty() && !p.is_empty() && !n.contains('/'))
                .ok_or_else(|| ImageError::BadEntry(entry.to_string()))?;
            map.entries.insert(name.to_string(), PathBuf::from(path));
        }
        Ok(map)
    }

    /// Adds or replaces one entry.
    pub fn insert(&mut self, name: impl Into<String>, path: impl Into<PathBuf>) {
        self.entries.insert(name.into(), path.into());
    }

    /// The program for `image`: `basename:tag` first, then `basename`.
    pub fn resolve(&self, image: &str) -> Result<&Path, ImageError> {
        let r = ImageRef::parse(image);
        r.tag
            .as_ref()
            .and_then(|tag| self.entries.get(&format!("{}:{tag}", r.basename)))
            .or_else(|| self.entries.get(&r.basename))
            .map(PathBuf::as_path)
            .ok_or(ImageError::Unmapped {
                image: image.to_string(),
                basename: r.basename,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_image_references() {
        let r = ImageRef::parse("ghcr.io/switchboard/signaling-node:v2@sha256:abcd");
        assert_eq!(r.basename, "signaling-node");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        let r = ImageRef::parse("localhost:5000/busybox");
        assert_eq!(r.basename, "busybox");
        assert_eq!(r.tag, None);
        let r = ImageRef::parse("busybox:");
        assert_eq!((r.basename.as_str(), r.tag), ("busybox", None));
    }

    #[test]
    fn tag_specific_entries_win() {
        let map =
            ImageMap::from_entries(["signaling-node=/bin/a", "signaling-node:v2=/bin/b"]).unwrap();
        assert_eq!(
            map.resolve("ghcr.io/switchboard/signaling-node:v1"),
            Ok(Path::new("/bin/a"))
        );
        assert_eq!(
            map.resolve("ghcr.io/switchboard/signaling-node:v2"),
            Ok(Path::new("/bin/b"))
        );
        assert_eq!(map.resolve("signaling-node"), Ok(Path::new("/bin/a")));
    }

    #[test]
    fn unmapped_and_malformed_entries_are_errors() {
        let map = ImageMap::from_entries(["a=/x"]).unwrap();
        assert_eq!(
            map.resolve("ghcr.io/x/other:1"),
            Err(ImageError::Unmapped {
                image: "ghcr.io/x/other:1".into(),
                basename: "other".into()
            })
        );
        for bad in ["noequals", "=/x", "a=", "ghcr.io/a=/x"] {
            assert!(
                matches!(ImageMap::from_entries([bad]), Err(ImageError::BadEntry(_))),
                "{bad}"
            );
        }
    }
}
