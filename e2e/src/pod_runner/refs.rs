//! Which API objects a pod needs before its container can start: the Secrets and ConfigMaps its
//! env and volumes reference, and the audiences of its service-account token projections.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

/// Objects referenced by a pod's first container and its volumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// Secret names.
    pub secrets: BTreeSet<String>,
    /// ConfigMap names.
    pub config_maps: BTreeSet<String>,
    /// Service-account token audiences (`""` = the apiserver's default) with the longest
    /// requested expiration in seconds.
    pub token_audiences: BTreeSet<(String, i64)>,
}

/// Collects the references of `pod`.
pub fn references(pod: &Pod) -> References {
    let mut r = References::default();
    let Some(spec) = pod.spec.as_ref() else {
        return r;
    };
    if let Some(c) = spec.containers.first() {
        for from in c.env_from.as_deref().unwrap_or_default() {
            if let Some(s) = &from.secret_ref {
                r.secrets.insert(s.name.clone());
            }
            if let Some(m) = &from.config_map_ref {
                r.config_maps.insert(m.name.clone());
            }
        }
        for var in c.env.as_deref().unwrap_or_default() {
            let Some(source) = &var.value_from else {
                continue;
            };
            if let Some(s) = &source.secret_key_ref {
                r.secrets.insert(s.name.clone());
            }
            if let Some(m) = &source.config_map_key_ref {
                r.config_maps.insert(m.name.clone());
            }
        }
    }
    for v in spec.volumes.as_deref().unwrap_or_default() {
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            r.secrets.insert(name);
        }
        if let Some(m) = &v.config_map {
            r.config_maps.insert(m.name.clone());
        }
        for source in v
            .projected
            .as_ref()
            .and_then(|p| p.sources.as_deref())
            .unwrap_or_default()
        {
            if let Some(s) = &source.secret {
                r.secrets.insert(s.name.clone());
            }
            if let Some(m) = &source.config_map {
                r.config_maps.insert(m.name.clone());
            }
            if let Some(t) = &source.service_account_token {
                let audience = t.audience.clone().unwrap_or_default();
                r.token_audiences
                    .insert((audience, t.expiration_seconds.unwrap_or(3600)));
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_env_and_volume_references() {
        let pod: Pod = serde_yaml::from_str(
            r#"
metadata: {name: p}
spec:
  containers:
  - name: c
    envFrom: [{secretRef: {name: s1}}, {configMapRef: {name: c1}}]
    env:
    - {name: A, valueFrom: {secretKeyRef: {name: s2, key: k}}}
    - {name: B, valueFrom: {configMapKeyRef: {name: c2, key: k}}}
    - {name: C, value: x}
  volumes:
  - {name: v1, secret: {secretName: s3}}
  - {name: v2, configMap: {name: c3}}
  - name: v3
    projected:
      sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3607}
      - configMap: {name: kube-root-ca.crt}
"#,
        )
        .unwrap();
        let r = references(&pod);
        assert_eq!(
            r.secrets,
            BTreeSet::from(["s1".into(), "s2".into(), "s3".into()])
        );
        assert_eq!(
            r.config_maps,
            BTreeSet::from([
                "c1".into(),
                "c2".into(),
                "c3".into(),
                "kube-root-ca.crt".into()
            ])
        );
        assert_eq!(r.token_audiences, BTreeSet::from([(String::new(), 3607)]));
    }
}
