//! Tests of the CRD types and generated manifests: names, printer columns, CEL rules,
//! descriptions, serde round trips and drift against `crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

use super::*;

fn crd_named(name: &str) -> CustomResourceDefinition {
    crds()
        .into_iter()
        .map(|(_, crd)| crd)
        .find(|crd| crd.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no CRD {name}"))
}

fn schema_json(crd: &CustomResourceDefinition) -> Value {
    let version = &crd.spec.versions[0];
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema.expect("schema")).expect("schema to json")
}

/// Every CEL rule in the schema, with the JSON path of the node that carries it.
fn rules(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(list)) = map.get("x-kubernetes-validations") {
                for rule in list {
                    let text = rule["rule"].as_str().expect("rule text").to_string();
                    assert!(
                        rule.get("message").is_some(),
                        "rule {text} at {path} has no message"
                    );
                    out.push((path.to_string(), text));
                }
            }
            for (key, child) in map {
                rules(child, &format!("{path}/{key}"), out);
            }
        }
        Value::Array(list) => list.iter().for_each(|child| rules(child, path, out)),
        _ => {}
    }
}

fn has_rule(crd: &CustomResourceDefinition, at: &str, rule: &str) -> bool {
    let mut found = Vec::new();
    rules(&schema_json(crd), "", &mut found);
    found
        .iter()
        .any(|(path, text)| path.ends_with(at) && text == rule)
}

fn columns(crd: &CustomResourceDefinition) -> Vec<(String, String)> {
    crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.to_uppercase(), c.json_path.clone()))
        .collect()
}

fn short_names(crd: &CustomResourceDefinition) -> Vec<String> {
    crd.spec.names.short_names.clone().unwrap_or_default()
}

/// Walks `properties` maps and returns the paths of properties without a description.
fn undocumented(value: &Value, path: &str, out: &mut Vec<String>) {
    let Value::Object(map) = value else { return };
    if let Some(Value::Object(props)) = map.get("properties") {
        for (name, prop) in props {
            let here = format!("{path}.{name}");
            if prop.get("description").is_none()
                && name != "metadata"
                && name != "apiVersion"
                && name != "kind"
            {
                out.push(here.clone());
            }
            undocumented(prop, &here, out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = map.get(key) {
            undocumented(child, &format!("{path}[]"), out);
        }
    }
}

#[test]
fn crds_are_listed_in_sorted_file_name_order() {
    let names: Vec<_> = crds().into_iter().map(|(file, _)| file).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert_eq!(
        names,
        [
            "protocolrollout.yaml",
            "roomshard.yaml",
            "signalingcluster.yaml"
        ]
    );
}

#[test]
fn every_crd_is_namespaced_in_our_group_with_status() {
    for (_, crd) in crds() {
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, VERSION);
        assert!(version.served && version.storage);
        let status = version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref());
        assert!(
            status.is_some(),
            "{:?} has no status subresource",
            crd.metadata.name
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["switchboard".to_string()][..])
        );
    }
}

#[test]
fn signaling_cluster_crd_has_names_columns_scale_and_rules() {
    let crd = crd_named("signalingclusters.switchboard.dev");
    assert_eq!(short_names(&crd), ["sigc"]);
    let cols = columns(&crd);
    for (name, path) in [
        ("READY", ".status.readyReplicas"),
        ("SHARDS", ".spec.shards"),
        ("CONFIG", ".status.configRevision"),
        ("AGE", ".metadata.creationTimestamp"),
    ] {
        assert!(
            cols.contains(&(name.into(), path.into())),
            "missing column {name}: {cols:?}"
        );
    }
    let scale = crd.spec.versions[0]
        .subresources
        .as_ref()
        .and_then(|s| s.scale.as_ref())
        .expect("scale");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    // All replicas, ready or not (as a Deployment counts them): an HPA that saw only ready
    // pods would scale up again while new pods start.
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );

    assert!(has_rule(
        &crd,
        "/spec/properties/shards",
        "self > 0 && self <= 4096"
    ));
    assert!(has_rule(&crd, "/spec/properties/shards", "self == oldSelf"));
    assert!(has_rule(&crd, "/spec/properties/replicas", "self >= 0"));
    assert!(has_rule(
        &crd,
        "/spec/properties/port",
        "self >= 1 && self <= 65535"
    ));
    assert!(has_rule(&crd, "/spec/properties/port", "self != 9100"));
    assert!(has_rule(
        &crd,
        "/spec",
        "self.drainTimeoutSeconds < self.terminationGracePeriodSeconds"
    ));
    assert!(has_rule(&crd, "", "size(self.metadata.name) <= 40"));
}

#[test]
fn room_shard_crd_has_names_columns_and_rules() {
    let crd = crd_named("roomshards.switchboard.dev");
    assert_eq!(short_names(&crd), ["rshard"]);
    let names: Vec<_> = columns(&crd).into_iter().map(|(name, _)| name).collect();
    for name in ["CLUSTER", "NODE", "EPOCH", "VERSION", "PHASE", "ROOMS"] {
        assert!(names.iter().any(|n| n == name), "missing column {name}");
    }
    assert!(has_rule(&crd, "/spec", "self.hashStart < self.hashEnd"));
    assert!(has_rule(&crd, "/spec", "self == oldSelf"));
    let schema = schema_json(&crd);
    let phase = &schema["properties"]["status"]["properties"]["phase"]["enum"];
    assert_eq!(
        phase,
        &serde_json::json!(["Assigned", "HandingOff", "Recovering", "Unassigned"])
    );
}

#[test]
fn protocol_rollout_crd_has_names_columns_and_rules() {
    let crd = crd_named("protocolrollouts.switchboard.dev");
    assert_eq!(short_names(&crd), ["prollout"]);
    let cols = columns(&crd);
    assert!(cols.contains(&("WEIGHTS".into(), ".status.weights".into())));
    assert!(cols.contains(&("PHASE".into(), ".status.phase".into())));
    assert!(cols.iter().any(|(name, _)| name == "AGE"));

    let versions = "/spec/properties/versions";
    assert!(has_rule(
        &crd,
        versions,
        "self.map(v, v.weight).sum() == 100"
    ));
    assert!(has_rule(
        &crd,
        versions,
        "self.all(v, self.exists_one(w, w.name == v.name))"
    ));
    assert!(has_rule(
        &crd,
        "/properties/weight",
        "self >= 0 && self <= 100"
    ));
    assert!(has_rule(
        &crd,
        "/properties/name",
        "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')"
    ));
    assert!(has_rule(&crd, "/properties/maxShardsMoving", "self >= 1"));

    let schema = schema_json(&crd);
    let list = &schema["properties"]["spec"]["properties"]["versions"];
    assert_eq!(list["minItems"], 1);
    assert_eq!(list["x-kubernetes-list-type"], "map");
    assert_eq!(
        list["x-kubernetes-list-map-keys"],
        serde_json::json!(["name"])
    );
    let protocols = &list["items"]["properties"]["protocols"]["items"]["enum"];
    assert_eq!(protocols, &serde_json::json!(["v1", "v2"]));
}

#[test]
fn every_property_has_a_description() {
    for (file, crd) in crds() {
        let mut missing = Vec::new();
        undocumented(&schema_json(&crd), "", &mut missing);
        assert!(
            missing.is_empty(),
            "{file}: undocumented properties {missing:?}"
        );
    }
}

#[test]
fn strings_used_by_rules_are_bounded() {
    // The apiserver refuses CEL rules whose estimated cost is unbounded; every string or list
    // a rule touches must carry a maxLength / maxItems.
    let crd = crd_named("protocolrollouts.switchboard.dev");
    let schema = schema_json(&crd);
    let spec = &schema["properties"]["spec"]["properties"];
    assert_eq!(spec["versions"]["maxItems"], 8);
    assert_eq!(
        spec["versions"]["items"]["properties"]["name"]["maxLength"],
        15
    );
    assert_eq!(spec["clusterRef"]["maxLength"], 40);
}

const CLUSTER_YAML: &str = r#"
apiVersion: switchboard.dev/v1alpha1
kind: SignalingCluster
metadata:
  name: demo
  namespace: live
spec:
  image: switchboard/signaling-node:0.1.0
  shards: 16
  etcd:
    endpoints: ["http://etcd:2379"]
  authSecret: demo-auth
  config:
    heartbeatSeconds: 10
  podTemplate:
    nodeSelector:
      pool: signaling
    tolerations:
    - key: dedicated
      operator: Equal
      value: signaling
      effect: NoSchedule
    resources:
      requests:
        cpu: 250m
        memory: 128Mi
"#;

const ROLLOUT_YAML: &str = r#"
apiVersion: switchboard.dev/v1alpha1
kind: ProtocolRollout
metadata:
  name: demo
  namespace: live
spec:
  clusterRef: demo
  versions:
  - name: v1
    weight: 90
    protocols: [v1]
  - name: v2
    image: switchboard/signaling-node:0.2.0
    weight: 10
  strategy:
    maxShardsMoving: 2
    rollback:
      maxErrorRate: 0.05
"#;

const SHARD_YAML: &str = r#"
apiVersion: switchboard.dev/v1alpha1
kind: RoomShard
metadata:
  name: demo-shard-3
  namespace: live
spec:
  cluster: demo
  index: 3
  hashStart: 805306368
  hashEnd: 1073741824
status:
  node: demo-v1-0
  epoch: 4
  version: v1
  phase: Assigned
  rooms: 12
  lastFailover:
    from: demo-v1-2
    to: demo-v1-0
    reason: LeaseExpired
    detectedMs: 180
    recoveredMs: 420
    at: "2025-01-01T00:00:00Z"
"#;

#[test]
fn signaling_cluster_sample_round_trips_with_defaults() {
    let cluster: SignalingCluster = serde_yaml::from_str(CLUSTER_YAML).expect("parse");
    let spec = &cluster.spec;
    assert_eq!(spec.replicas, 3);
    assert_eq!(spec.port, 7000);
    assert_eq!(spec.shards, 16);
    assert_eq!(spec.config.heartbeat_seconds, 10);
    assert_eq!(
        spec.config.idle_timeout_seconds,
        NodeConfig::default().idle_timeout_seconds
    );
    let tolerations = spec
        .pod_template
        .as_ref()
        .and_then(|p| p.tolerations.as_ref());
    assert_eq!(tolerations.map(Vec::len), Some(1));

    let json = serde_json::to_value(&cluster).expect("to json");
    assert_eq!(json["spec"]["authSecret"], "demo-auth");
    assert_eq!(json["spec"]["terminationGracePeriodSeconds"], 60);
    let back: SignalingCluster = serde_json::from_value(json).expect("from json");
    assert_eq!(back, cluster);
}

#[test]
fn client_access_has_its_rules_and_round_trips() {
    let crd = crd_named("signalingclusters.switchboard.dev");
    let at = "/spec/properties/clientAccess";
    assert!(has_rule(
        &crd,
        at,
        "!has(self.tls) || (self.entryUrl.startsWith('wss://') && self.nodeUrlTemplate.startsWith('wss://'))"
    ));
    assert!(has_rule(
        &crd,
        at,
        "!has(self.tls) || self.tls.termination != 'Ingress' || has(self.ingress)"
    ));
    assert!(has_rule(
        &crd,
        &format!("{at}/properties/entryUrl"),
        "self.startsWith('ws://') || self.startsWith('wss://')"
    ));
    assert!(has_rule(
        &crd,
        &format!("{at}/properties/entryService"),
        "!has(self.nodePort) || self.type != 'ClusterIP'"
    ));
    assert!(columns(&crd).contains(&("ENTRY".into(), ".status.entryUrl".into())));

    let yaml = format!(
        "{CLUSTER_YAML}  clientAccess:
    entryUrl: wss://signal.example.com/ws
    nodeUrlTemplate: wss://signal.example.com/nodes/{{pod}}/ws
    ingress:
      className: traefik
    tls:
      secretName: signal-cert
      termination: Ingress
"
    );
    let cluster: SignalingCluster = serde_yaml::from_str(&yaml).expect("parse");
    let access = cluster.spec.client_access.as_ref().expect("clientAccess");
    assert_eq!(access.entry_service.type_, ServiceType::ClusterIP);
    assert!(access.node_services.is_none());
    assert_eq!(
        access.tls.as_ref().map(|t| t.termination),
        Some(TlsTermination::Ingress)
    );
    let json = serde_json::to_value(&cluster).expect("to json");
    assert_eq!(
        json["spec"]["clientAccess"]["ingress"]["className"],
        "traefik"
    );
    let back: SignalingCluster = serde_json::from_value(json).expect("from json");
    assert_eq!(back, cluster);
    let bad = yaml.replace("termination: Ingress", "termination: Proxy");
    assert!(serde_yaml::from_str::<SignalingCluster>(&bad).is_err());
}

#[test]
fn protocol_rollout_sample_round_trips() {
    let rollout: ProtocolRollout = serde_yaml::from_str(ROLLOUT_YAML).expect("parse");
    let versions = &rollout.spec.versions;
    assert_eq!(versions[0].protocols, [ProtocolVersion::V1]);
    assert_eq!(
        versions[1].protocols,
        [ProtocolVersion::V1, ProtocolVersion::V2]
    );
    assert_eq!(versions[0].image, None);
    assert_eq!(rollout.spec.strategy.max_shards_moving, 2);
    assert_eq!(
        rollout
            .spec
            .strategy
            .rollback
            .as_ref()
            .map(|r| r.window_seconds),
        Some(300)
    );
    assert!(!rollout.spec.paused);

    let yaml = serde_yaml::to_string(&rollout).expect("to yaml");
    let back: ProtocolRollout = serde_yaml::from_str(&yaml).expect("from yaml");
    assert_eq!(back, rollout);
}

#[test]
fn room_shard_sample_round_trips_with_status() {
    let shard: RoomShard = serde_yaml::from_str(SHARD_YAML).expect("parse");
    let status = shard.status.as_ref().expect("status");
    assert_eq!(status.phase, ShardPhase::Assigned);
    let failover = status.last_failover.as_ref().expect("failover");
    assert_eq!(
        (failover.detected_ms, failover.recovered_ms),
        (180, Some(420))
    );

    let json = serde_json::to_value(&shard).expect("to json");
    assert_eq!(json["status"]["lastFailover"]["detectedMs"], 180);
    let back: RoomShard = serde_json::from_value(json).expect("from json");
    assert_eq!(back, shard);
}

#[test]
fn unknown_enum_values_are_rejected() {
    let bad = ROLLOUT_YAML.replace("protocols: [v1]", "protocols: [v3]");
    assert!(serde_yaml::from_str::<ProtocolRollout>(&bad).is_err());
}

#[test]
fn committed_crds_match_the_types() {
    // The same check CI runs: `cat crds/*.yaml` must equal `crdgen`'s output.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let committed: String = files
        .iter()
        .map(|path| std::fs::read_to_string(path).expect("read crd"))
        .collect();
    let generated = crd_yaml().expect("generate");
    assert!(
        committed == generated,
        "crds/ is stale: run `cargo run -p switchboard-operator --bin crdgen -- --write crds`"
    );
}

fn descriptions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(text)) = map.get("description") {
                out.push(text.clone());
            }
            map.values().for_each(|child| descriptions(child, out));
        }
        Value::Array(list) => list.iter().for_each(|child| descriptions(child, out)),
        _ => {}
    }
}

#[test]
fn descriptions_are_unwrapped_paragraphs() {
    for (file, crd) in crds() {
        let mut texts = Vec::new();
        descriptions(&schema_json(&crd), &mut texts);
        assert!(
            texts.len() >= 15,
            "{file}: only {} descriptions",
            texts.len()
        );
        for text in texts {
            let single_breaks = text.replace("\n\n", "");
            assert!(
                !single_breaks.contains('\n'),
                "{file}: hard-wrapped description {text:?}"
            );
        }
    }
    assert_eq!(unwrap_paragraphs("a\nb\n\nc\n d"), "a b\n\nc d");
}
