//! Command-line tools on the client library (feature `cli`): `signaling-node client` and
//! `signaling-node token`, plus the flags every tool shares (secret, versions, durations).

pub mod client;
pub mod format;
pub mod token;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use switchboard_protocol::ProtocolVersion;
use switchboard_protocol::auth::JwtSecret;

pub use client::{ClientArgs, run_client};
pub use token::{TokenArgs, run_token};

/// Where the JWT secret comes from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecretArgs {
    /// File holding the HS256 secret the node verifies tokens with (surrounding whitespace is
    /// ignored, as the node does).
    #[arg(long, value_name = "FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// The secret itself — for tests and demos only: it is visible in the process list.
    #[arg(long, value_name = "SECRET", conflicts_with = "jwt_secret_file")]
    pub secret: Option<String>,
}

impl SecretArgs {
    /// The secret, if one was given.
    pub fn load(&self) -> anyhow::Result<Option<JwtSecret>> {
        if let Some(path) = &self.jwt_secret_file {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the JWT secret file {}", path.display()))?;
            let secret = JwtSecret::from_file_contents(&bytes)
                .with_context(|| format!("JWT secret file {}", path.display()))?;
            return Ok(Some(secret));
        }
        if let Some(secret) = &self.secret {
            return Ok(Some(
                JwtSecret::new(secret.as_bytes().to_vec()).context("--secret")?,
            ));
        }
        Ok(None)
    }

    /// The secret, or an error naming the flags.
    pub fn require(&self) -> anyhow::Result<JwtSecret> {
        self.load()?
            .context("a JWT secret is needed: pass --jwt-secret-file FILE (or --secret for tests)")
    }
}

/// Protocol versions a client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VersionArg {
    /// `switchboard.v1`
    V1,
    /// `switchboard.v2`
    V2,
}

impl From<VersionArg> for ProtocolVersion {
    fn from(v: VersionArg) -> Self {
        match v {
            VersionArg::V1 => ProtocolVersion::V1,
            VersionArg::V2 => ProtocolVersion::V2,
        }
    }
}

/// The versions to offer: the given ones, or v2 and v1.
pub fn versions(args: &[VersionArg]) -> Vec<ProtocolVersion> {
    if args.is_empty() {
        vec![ProtocolVersion::V2, ProtocolVersion::V1]
    } else {
        args.iter().map(|v| ProtocolVersion::from(*v)).collect()
    }
}

/// Parses a duration: `90`, `90s`, `15m`, `1h`, `2d`, `1h30m`, `1.5s`, `250ms`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    if text.is_empty() {
        bail!("empty duration");
    }
    if let Ok(secs) = text.parse::<f64>() {
        return seconds(secs, text);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            bail!("bad duration {text:?}: expected a number before {rest:?}");
        }
        let value: f64 = rest[..digits]
            .parse()
            .with_context(|| format!("bad duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" | "" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            unit => bail!("bad duration {text:?}: unknown unit {unit:?} (ms, s, m, h, d)"),
        };
        rest = &rest[unit_len..];
        total += seconds(value * factor, text)?;
    }
    Ok(total)
}

fn seconds(secs: f64, text: &str) -> anyhow::Result<Duration> {
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        bail!("bad duration {text:?}");
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(s).unwrap();
        assert_eq!(d("90"), Duration::from_secs(90));
        assert_eq!(d("90s"), Duration::from_secs(90));
        assert_eq!(d("15m"), Duration::from_secs(900));
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert_eq!(d("2d"), Duration::from_secs(172_800));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        for bad in ["", "h", "1x", "-5", "1h-", "nan"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets() {
        let none = SecretArgs::default();
        assert!(none.load().unwrap().is_none());
        assert!(none.require().is_err());
        let inline = SecretArgs {
            secret: Some("s3cret".into()),
            ..SecretArgs::default()
        };
        assert_eq!(
            inline.require().unwrap(),
            JwtSecret::new(b"s3cret".to_vec()).unwrap()
        );
        let path = std::env::temp_dir().join(format!("sb-secret-{}", std::process::id()));
        std::fs::write(&path, b"s3cret\n").unwrap();
        let file = SecretArgs {
            jwt_secret_file: Some(path.clone()),
            ..SecretArgs::default()
        };
        assert_eq!(
            file.require().unwrap(),
            JwtSecret::new(b"s3cret".to_vec()).unwrap()
        );
        std::fs::write(&path, b"  \n").unwrap();
        assert!(file.load().is_err());
        let _ = std::fs::remove_file(&path);
        let missing = SecretArgs {
            jwt_secret_file: Some("/nonexistent/secret".into()),
            ..SecretArgs::default()
        };
        assert!(missing.load().is_err());
    }

    #[test]
    fn default_versions_offer_both() {
        assert_eq!(
            versions(&[]),
            vec![ProtocolVersion::V2, ProtocolVersion::V1]
        );
        assert_eq!(versions(&[VersionArg::V1]), vec![ProtocolVersion::V1]);
    }
}
