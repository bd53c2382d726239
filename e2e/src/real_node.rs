//! A throw-away cluster on one real Kubernetes node, for the scenarios: the control plane of
//! `e2e/scripts/control-plane` bound to the node's link, and the node of `e2e/scripts/node`
//! (containerd + runc, kubelet, kube-proxy, CoreDNS, the images of `e2e/scripts/build-images`),
//! in a private run directory on free ports; stopped and removed on drop (the run directory is
//! kept, with its path printed, when the test panicked so the logs can be read).
//!
//! Faults use the real mechanisms: kill -9 or SIGSTOP of a container's process, an iptables cut
//! of a pod's network namespace, the kubelet stopped ([`RealCluster::fault`]).
//!
//! Clients outside the cluster run in the node's client network namespace
//! ([`RealCluster::outside`]), which reaches only the node's external address.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cluster::{
    ClusterError, free_ports, fresh_run_dir, kubectl, new_client, repo_root, script, tools_bin,
};

/// The node's addresses, as `e2e/scripts/node env` prints them.
#[derive(Debug, Clone, Default)]
pub struct NodeAddresses {
    /// The node's InternalIP (its end of the link to this machine).
    pub node_ip: String,
    /// This machine's end of the link; the apiserver listens there.
    pub host_ip: String,
    /// Pod addresses.
    pub pod_cidr: String,
    /// Service addresses.
    pub service_cidr: String,
    /// The cluster DNS Service's address.
    pub dns_ip: String,
    /// The node's network namespace (`ip netns`).
    pub netns: String,
    /// The outside clients' network namespace: its only route is to `external_ip`.
    pub client_netns: String,
    /// The node's external address (what outside clients reach).
    pub external_ip: String,
    /// The name that resolves to `external_ip` in the client namespace.
    pub external_host: String,
}

/// A fault injected with a real mechanism into a pod's first container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of the container's main process (the kubelet restarts it per restartPolicy).
    Kill,
    /// SIGSTOP: the process stops answering; its sockets stay open.
    Stop,
    /// SIGCONT after [`Fault::Stop`].
    Cont,
    /// Every packet in and out of the pod dropped (iptables in its network namespace).
    Cut,
    /// The cut undone.
    Heal,
}

impl Fault {
    fn verb(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Stop => "stop",
            Fault::Cont => "cont",
            Fault::Cut => "cut",
            Fault::Heal => "heal",
        }
    }
}

/// A network fault in a pod's network namespace (iptables, `e2e/scripts/node fault`); each
/// adds to what is there and [`Fault::Heal`] removes them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetFault {
    /// TCP to and from these ports (at either end) dropped.
    CutPorts(Vec<u16>),
    /// Every packet to and from these addresses dropped.
    CutPeers(Vec<String>),
    /// Each packet in and out dropped with this probability, in percent.
    Loss(u8),
    /// Every packet in and out sent to this NFQUEUE queue (through unharmed while no program
    /// is bound to it; `net-delay` delays them).
    Queue(u16),
}

impl NetFault {
    /// `e2e/scripts/node` arguments injecting it into `target` (`namespace/pod`).
    fn args(&self, target: &str) -> Vec<String> {
        let (verb, rest): (&str, Vec<String>) = match self {
            NetFault::CutPorts(ports) => ("cut-ports", ports.iter().map(u16::to_string).collect()),
            NetFault::CutPeers(peers) => ("cut-peers", peers.clone()),
            NetFault::Loss(percent) => ("loss", vec![percent.to_string()]),
            NetFault::Queue(num) => ("queue", vec![num.to_string()]),
        };
        let mut args = vec!["fault".to_string(), verb.to_string(), target.to_string()];
        args.extend(rest);
        args
    }
}

/// A running control plane with one real node.
pub struct RealCluster {
    /// Private run directory (component logs under `logs/`).
    pub run_dir: PathBuf,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Admin client.
    pub client: kube::Client,
    /// The node's addresses.
    pub addresses: NodeAddresses,
    /// How long the control plane and the node took to come up.
    pub startup: Duration,
    env: Vec<(String, String)>,
    _teardown: Teardown,
}

/// Stops the node and the control plane of a run directory when dropped, and removes the
/// directory unless the start failed or the thread is panicking (then its logs are kept and
/// its path printed).
struct Teardown {
    env: Vec<(String, String)>,
    run_dir: PathBuf,
    keep_logs: bool,
}

/// The binaries and images the node needs, or what is missing and how to get it.
pub fn prerequisites() -> Result<(), String> {
    let bin = tools_bin();
    let missing: Vec<String> = [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
        "kubelet",
        "kube-proxy",
        "crictl",
        "coredns",
        "helm",
    ]
    .into_iter()
    .filter(|t| !bin.join(t).is_file())
    .map(str::to_string)
    .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} not found in {} (run e2e/scripts/build-tools or set SWITCHBOARD_TOOLS_DIR)",
            missing.join(", "),
            bin.display()
        ));
    }
    if !images_dir().join("images.txt").is_file() {
        return Err(format!(
            "no container images in {} (run e2e/scripts/build-images)",
            images_dir().display()
        ));
    }
    Ok(())
}

/// `examples/basic/` as JSON objects, in file order (secret, rollout, cluster): the sample
/// fleet the scenarios and benches apply, tweaked.
pub fn basic_examples() -> Result<Vec<serde_json::Value>, String> {
    let dir = repo_root().join("examples/basic");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("reading {}: {e}", file.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| format!("{} is not valid YAML: {e}", file.display()))?;
            if !value.is_null() {
                docs.push(value);
            }
        }
    }
    Ok(docs)
}

/// Where `e2e/scripts/build-images` wrote the images (`$SWITCHBOARD_IMAGES_DIR`, else
/// `<cargo target dir>/images`).
pub fn images_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWITCHBOARD_IMAGES_DIR") {
        return PathBuf::from(dir);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from)
        .join("images")
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Parses `export NAME=value` lines.
fn exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl RealCluster {
    /// Sets up the node's network, starts the control plane bound to it and the node, and
    /// waits until the node is Ready with cluster DNS. Whatever fails stops what started.
    pub async fn start() -> Result<Self, ClusterError> {
        Self::start_with(&[]).await
    }

    /// [`RealCluster::start`] with more environment for the scripts (e.g.
    /// `SWITCHBOARD_KUBELET_MAX_RESTART_PERIOD`, see `e2e/scripts/node`).
    pub async fn start_with(extra_env: &[(&str, &str)]) -> Result<Self, ClusterError> {
        let started = Instant::now();
        let ports = free_ports(5)?;
        let run_dir = fresh_run_dir("switchboard-node", ports[0])?;
        let mut env: Vec<(String, String)> = vec![
            ("SWITCHBOARD_RUN_DIR".into(), run_dir.display().to_string()),
            (
                "SWITCHBOARD_TOOLS_DIR".into(),
                tools_bin()
                    .parent()
                    .unwrap_or(Path::new("."))
                    .display()
                    .to_string(),
            ),
            (
                "SWITCHBOARD_IMAGES_DIR".into(),
                images_dir().display().to_string(),
            ),
            ("SWITCHBOARD_ETCD_PORT".into(), ports[0].to_string()),
            ("SWITCHBOARD_ETCD_PEER_PORT".into(), ports[1].to_string()),
            ("SWITCHBOARD_APISERVER_PORT".into(), ports[2].to_string()),
            (
                "SWITCHBOARD_CONTROLLER_MANAGER_PORT".into(),
                ports[3].to_string(),
            ),
            ("SWITCHBOARD_SCHEDULER_PORT".into(), ports[4].to_string()),
            ("SWITCHBOARD_NODE_GRACE".into(), "16s".into()),
        ];
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
        );
        // From here on the guard removes whatever started, also when a step fails.
        let mut teardown = Teardown {
            env: env.clone(),
            run_dir: run_dir.clone(),
            keep_logs: true,
        };
        let checked = |out: std::process::Output, what: &str| {
            if out.status.success() {
                Ok(out)
            } else {
                Err(ClusterError::ControlPlane(format!(
                    "{what} failed:\n{}",
                    output_text(&out)
                )))
            }
        };
        checked(script(&env, "node", "network")?, "e2e/scripts/node network")?;
        let node_env = checked(script(&env, "node", "env")?, "e2e/scripts/node env")?;
        let node_env = exports(&String::from_utf8_lossy(&node_env.stdout));
        let get = |name: &str| {
            node_env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let addresses = NodeAddresses {
            node_ip: get("SWITCHBOARD_NODE_IP"),
            host_ip: get("SWITCHBOARD_APISERVER_ADDRESS"),
            pod_cidr: get("SWITCHBOARD_POD_CIDR"),
            service_cidr: get("SWITCHBOARD_SERVICE_CIDR"),
            dns_ip: get("SWITCHBOARD_DNS_IP"),
            netns: get("SWITCHBOARD_NODE_NETNS"),
            client_netns: get("SWITCHBOARD_CLIENT_NETNS"),
            external_ip: get("SWITCHBOARD_EXTERNAL_IP"),
            external_host: get("SWITCHBOARD_EXTERNAL_HOST"),
        };
        env.extend(node_env);
        teardown.env = env.clone();
        checked(
            script(&env, "control-plane", "start")?,
            "e2e/scripts/control-plane start",
        )?;
        let kubeconfig = run_dir.join("kubeconfig");
        let client = new_client(&kubeconfig).await?;
        checked(script(&env, "node", "start")?, "e2e/scripts/node start")?;
        teardown.keep_logs = false;
        Ok(Self {
            run_dir,
            kubeconfig,
            client,
            addresses,
            startup: started.elapsed(),
            env,
            _teardown: teardown,
        })
    }

    /// Runs kubectl against the cluster, `stdin` piped in; fails on a non-zero exit.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, ClusterError> {
        kubectl(&self.kubeconfig, args, stdin)
    }

    /// The client URL of the fleet etcd (`e2e/scripts/deploy` runs it behind Service `etcd` in
    /// `namespace`); the host routes the Service range to the node, so it works from here too.
    pub fn fleet_etcd_url(&self, namespace: &str) -> Result<String, ClusterError> {
        let ip = self.kubectl(
            &[
                "-n",
                namespace,
                "get",
                "service",
                "etcd",
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
            None,
        )?;
        Ok(format!("http://{}:2379", ip.trim()))
    }

    /// Runs `e2e/scripts/deploy ARGS` against the cluster (see that script).
    pub fn deploy(&self, args: &[&str]) -> Result<(), ClusterError> {
        let script = repo_root().join("e2e/scripts/deploy");
        let out = std::process::Command::new(&script)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| ClusterError::Io {
                what: script.display().to_string(),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ClusterError::Script(format!(
                "e2e/scripts/deploy {} failed:\n{}",
                args.join(" "),
                output_text(&out)
            )))
        }
    }

    /// Injects `fault` into pod `namespace/pod` (`e2e/scripts/node fault`).
    pub fn fault(&self, fault: Fault, namespace: &str, pod: &str) -> Result<(), ClusterError> {
        self.node(&["fault", fault.verb(), &format!("{namespace}/{pod}")])
    }

    /// Injects the network fault `fault` into pod `namespace/pod`; [`Fault::Heal`] undoes it.
    pub fn net_fault(
        &self,
        fault: &NetFault,
        namespace: &str,
        pod: &str,
    ) -> Result<(), ClusterError> {
        let args = fault.args(&format!("{namespace}/{pod}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.node(&args)
    }

    /// The network namespace of pod `namespace/pod` as a path (for `nsenter --net=`).
    pub fn pod_netns(&self, namespace: &str, pod: &str) -> Result<PathBuf, ClusterError> {
        let out = self.node_output(&["fault", "netns", &format!("{namespace}/{pod}")])?;
        Ok(PathBuf::from(out.trim()))
    }

    /// Stops the kubelet (`running: false`; the node turns NotReady, containers keep running)
    /// or starts it again.
    pub fn kubelet(&self, running: bool) -> Result<(), ClusterError> {
        let verb = if running {
            "kubelet-start"
        } else {
            "kubelet-stop"
        };
        self.node(&["fault", verb])
    }

    /// The host pid of a pod's first container (for process measurements).
    pub fn container_pid(&self, namespace: &str, pod: &str) -> Result<u32, ClusterError> {
        let out = self.node_output(&["pid", &format!("{namespace}/{pod}")])?;
        out.trim()
            .parse()
            .map_err(|_| ClusterError::Kube(format!("no pid for {namespace}/{pod}: {out}")))
    }

    /// The last `lines` lines of a pod's log (`kubectl logs`), or why there are none.
    pub fn logs(&self, namespace: &str, pod: &str, lines: usize) -> String {
        self.kubectl(
            &["-n", namespace, "logs", pod, &format!("--tail={lines}")],
            None,
        )
        .unwrap_or_else(|e| format!("({e})"))
    }

    /// A command that runs `program` in the outside clients' network namespace, where only the
    /// node's external address is reachable and [`NodeAddresses::external_host`] resolves to
    /// it (`ip netns exec`, which also puts the namespace's /etc/hosts in place).
    pub fn outside(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut command = std::process::Command::new("ip");
        command
            .args(["netns", "exec", &self.addresses.client_netns])
            .arg(program);
        command
    }

    /// Environment for `e2e/scripts/*` of this cluster.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    fn node(&self, args: &[&str]) -> Result<(), ClusterError> {
        self.node_output(args).map(|_| ())
    }

    fn node_output(&self, args: &[&str]) -> Result<String, ClusterError> {
        let script = repo_root().join("e2e/scripts/node");
        let out = std::process::Command::new(&script)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| ClusterError::Io {
                what: script.display().to_string(),
                source,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(ClusterError::Script(format!(
                "e2e/scripts/node {} failed:\n{}",
                args.join(" "),
                output_text(&out)
            )))
        }
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        // The control plane first: the apiserver listens on the node's link and would wait
        // for its own address once the link is gone.
        for (what, command) in [("control-plane", "stop"), ("node", "stop")] {
            match script(&self.env, what, command) {
                Ok(out) if !out.status.success() => {
                    eprintln!("e2e/scripts/{what} {command}: {}", output_text(&out));
                }
                Err(e) => eprintln!("e2e/scripts/{what} {command}: {e}"),
                Ok(_) => {}
            }
        }
        if self.keep_logs || std::thread::panicking() {
            eprintln!("real-node cluster logs kept in {}", self.run_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::exports;

    #[test]
    fn net_faults_name_their_target_then_their_arguments() {
        use super::NetFault;
        assert_eq!(
            NetFault::CutPorts(vec![2379, 7000]).args("default/n-0"),
            ["fault", "cut-ports", "default/n-0", "2379", "7000"]
        );
        assert_eq!(
            NetFault::CutPeers(vec!["10.0.0.5".into()]).args("default/n-0"),
            ["fault", "cut-peers", "default/n-0", "10.0.0.5"]
        );
        assert_eq!(
            NetFault::Loss(20).args("x/y"),
            ["fault", "loss", "x/y", "20"]
        );
    }

    #[test]
    fn exports_are_parsed_and_other_lines_ignored() {
        let parsed = exports("export A=1\nnoise\nexport B=x=y\n");
        assert_eq!(
            parsed,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
    }
}
