//! The client certificate of `spec.clientAccess.tls` (pure): the Secret must hold a PEM chain
//! and a matching private key, and the chain's first certificate must cover every host
//! clients connect to. Only a pair that passes is copied to where the nodes (or the Ingress
//! objects) read it, so a bad rotation leaves the last good certificate serving.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;

/// Key of the certificate chain in a `kubernetes.io/tls` Secret.
pub const TLS_CRT: &str = "tls.crt";
/// Key of the private key in a `kubernetes.io/tls` Secret.
pub const TLS_KEY: &str = "tls.key";

/// A checked certificate chain and key, as PEM, ready to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// PEM certificate chain.
    pub cert: Vec<u8>,
    /// PEM private key.
    pub key: Vec<u8>,
}

/// Why the Secret's certificate is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsProblem {
    /// The Secret does not exist.
    #[error("TLS Secret {0} not found; the nodes keep the last good certificate")]
    NotFound(String),
    /// The Secret exists but holds no usable pair.
    #[error("TLS Secret {secret}: {why}; the nodes keep the last good certificate")]
    Invalid {
        /// The Secret.
        secret: String,
        /// What is wrong.
        why: String,
    },
    /// The certificate does not cover some hosts clients connect to.
    #[error(
        "the certificate in TLS Secret {secret} is not valid for {}; the nodes keep the last good certificate",
        hosts.join(", ")
    )]
    HostMismatch {
        /// The Secret.
        secret: String,
        /// The hosts not covered.
        hosts: Vec<String>,
    },
}

impl TlsProblem {
    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "TLSSecretNotFound",
            Self::Invalid { .. } => "TLSSecretInvalid",
            Self::HostMismatch { .. } => "CertificateHostMismatch",
        }
    }
}

/// Checks Secret `secret`'s `data` (`None`: the Secret does not exist) against `hosts`.
pub fn check(
    secret: &str,
    data: Option<&BTreeMap<String, ByteString>>,
    hosts: &[String],
) -> Result<CertPair, TlsProblem> {
    let data = data.ok_or_else(|| TlsProblem::NotFound(secret.to_string()))?;
    let invalid = |why: String| TlsProblem::Invalid {
        secret: secret.to_string(),
        why,
    };
    let get = |key: &str| {
        data.get(key)
            .map(|b| b.0.clone())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| invalid(format!("no {key}")))
    };
    let (cert_pem, key_pem) = (get(TLS_CRT)?, get(TLS_KEY)?);
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("{TLS_CRT} is not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(format!("no certificate in {TLS_CRT}")));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| invalid(format!("{TLS_KEY} is not PEM: {e}")))?
        .ok_or_else(|| invalid(format!("no private key in {TLS_KEY}")))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain.clone(), key, &provider)
        .map_err(|e| invalid(format!("{TLS_KEY} does not fit the certificate: {e}")))?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| invalid(format!("the certificate does not parse: {e:?}")))?;
    let mut uncovered: Vec<String> = hosts
        .iter()
        .filter(|host| {
            let covered = ServerName::try_from(host.as_str())
                .is_ok_and(|name| leaf.verify_is_valid_for_subject_name(&name).is_ok());
            !covered
        })
        .cloned()
        .collect();
    uncovered.sort();
    uncovered.dedup();
    if !uncovered.is_empty() {
        return Err(TlsProblem::HostMismatch {
            secret: secret.to_string(),
            hosts: uncovered,
        });
    }
    Ok(CertPair {
        cert: cert_pem,
        key: key_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway pair made with openssl: `*.signal.test`, `signal.test` and `192.0.2.7`.
    fn pair(dir: &std::path::Path, sans: &str) -> BTreeMap<String, ByteString> {
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (e2e/scripts/install-deps)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            "-days",
            "1",
            "-subj",
            "/CN=test",
            "-addext",
            &format!("subjectAltName={sans}"),
        ]);
        BTreeMap::from([
            (
                TLS_CRT.to_string(),
                ByteString(std::fs::read(dir.join("c.pem")).unwrap()),
            ),
            (
                TLS_KEY.to_string(),
                ByteString(std::fs::read(dir.join("k.pem")).unwrap()),
            ),
        ])
    }

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sb-cert-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_pair_for_the_hosts_passes_and_others_are_named() {
        let dir = tempdir("hosts");
        let data = pair(&dir, "DNS:*.signal.test,DNS:signal.test,IP:192.0.2.7");
        let hosts = |list: &[&str]| list.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        let ok = check(
            "s",
            Some(&data),
            &hosts(&["signal.test", "demo-v1-0.signal.test", "192.0.2.7"]),
        );
        assert!(ok.is_ok(), "{ok:?}");
        let bad = check(
            "s",
            Some(&data),
            &hosts(&["signal.test", "other.test", "a.b.signal.test", "192.0.2.8"]),
        );
        assert_eq!(
            bad,
            Err(TlsProblem::HostMismatch {
                secret: "s".into(),
                hosts: hosts(&["192.0.2.8", "a.b.signal.test", "other.test"]),
            })
        );
        assert_eq!(bad.unwrap_err().reason(), "CertificateHostMismatch");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn missing_and_broken_secrets_are_refused() {
        assert_eq!(
            check("gone", None, &[]),
            Err(TlsProblem::NotFound("gone".into()))
        );
        let dir = tempdir("broken");
        let good = pair(&dir, "DNS:signal.test");
        let mut no_key = good.clone();
        no_key.remove(TLS_KEY);
        let mut garbage = good.clone();
        garbage.insert(TLS_CRT.into(), ByteString(b"not a certificate".to_vec()));
        let other = pair(&tempdir("other"), "DNS:signal.test");
        let mut mismatch = good.clone();
        mismatch.insert(TLS_KEY.into(), other[TLS_KEY].clone());
        for (what, data) in [
            ("no key", no_key),
            ("garbage", garbage),
            ("mismatch", mismatch),
        ] {
            match check("s", Some(&data), &["signal.test".to_string()]) {
                Err(problem @ TlsProblem::Invalid { .. }) => {
                    assert_eq!(problem.reason(), "TLSSecretInvalid", "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        std::fs::remove_dir_all(dir).ok();
    }
}
