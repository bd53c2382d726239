"""The real-node fleet of e2e/README.md, driven only through its scripts, kubectl and the plugin:
control plane, one real node, `deploy --fleet` (examples/basic), faults and drains.
"""

import base64
import json
import os
import shlex
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = ROOT / "e2e" / "scripts"
PORT_VARS = (
    "SWITCHBOARD_ETCD_PORT",
    "SWITCHBOARD_ETCD_PEER_PORT",
    "SWITCHBOARD_APISERVER_PORT",
    "SWITCHBOARD_CONTROLLER_MANAGER_PORT",
    "SWITCHBOARD_SCHEDULER_PORT",
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fleet:
    """A control plane, a node and the sample fleet in a run directory of our own."""

    def __init__(self, run_dir=None, log=print):
        self.log = log
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix="indie-fleet-"))
        tools = os.environ.get("SWITCHBOARD_TOOLS_DIR", str(ROOT / "e2e" / ".tools"))
        self.kubectl_bin = Path(tools) / "bin" / "kubectl"
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        self.plugin = target / "release" / "kubectl-switchboard"
        self.env = dict(os.environ, SWITCHBOARD_RUN_DIR=str(self.run_dir),
                        KUBECONFIG=str(self.run_dir / "kubeconfig"))
        # Loopback ports of the control plane: free ones, so other environments keep theirs.
        for var in PORT_VARS:
            self.env.setdefault(var, str(free_port()))
        self.started = False

    def sh(self, *cmd, check=True, timeout=600):
        """Runs a command in the fleet's environment; returns stdout."""
        self.log(f"$ {shlex.join(map(str, cmd))}")
        r = subprocess.run([str(c) for c in cmd], env=self.env, capture_output=True, text=True, timeout=timeout)
        if r.stderr.strip():
            self.log(r.stderr.strip())
        if check and r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
        return r.stdout

    def up(self):
        """network, control plane, node, deploy --fleet (as e2e/up does, without --demo)."""
        self.started = True
        self.sh(SCRIPTS / "node", "network")
        for line in self.sh(SCRIPTS / "node", "env").splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            self.env[name] = value
        self.sh(SCRIPTS / "control-plane", "start")
        self.sh(SCRIPTS / "node", "start")
        self.sh(SCRIPTS / "deploy", "--fleet")
        saved = {k: v for k, v in self.env.items() if k.startswith("SWITCHBOARD_") or k == "KUBECONFIG"}
        (self.run_dir / "independent-client.env.json").write_text(json.dumps(saved))
        return self

    def attach(self):
        """Uses a fleet an earlier `up` left running in the same run directory (for iterating
        on the tests: SBCLIENT_FLEET_REUSE=1); False when there is none."""
        saved = self.run_dir / "independent-client.env.json"
        if not saved.exists():
            return False
        self.env.update(json.loads(saved.read_text()))
        return True

    def down(self):
        """Stops the control plane and the node (logs stay in the run directory)."""
        if not self.started:
            return
        self.sh(SCRIPTS / "control-plane", "stop", check=False)
        self.sh(SCRIPTS / "node", "stop", check=False)
        self.started = False

    def kubectl(self, *args):
        """kubectl against the fleet's control plane."""
        return self.sh(self.kubectl_bin, "--request-timeout=30s", *args)

    def switchboard(self, *args, timeout=300):
        """The kubectl plugin (`kubectl switchboard ...`)."""
        return self.sh(self.plugin, *args, timeout=timeout)

    def secret(self):
        """The fleet's HS256 join-token key, from the Secret the nodes read (examples/basic)."""
        data = json.loads(self.kubectl("get", "secret", "demo-auth", "-o", "json"))["data"]["secret"]
        return base64.b64decode(data).strip()

    def pods(self):
        """Running, ready node pods: name -> (pod IP, version label)."""
        items = json.loads(self.kubectl("get", "pods", "-l", "switchboard.dev/cluster=demo", "-o", "json"))["items"]
        out = {}
        for p in items:
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            if ready and p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp"):
                out[p["metadata"]["name"]] = (p["status"]["podIP"], p["metadata"]["labels"].get("switchboard.dev/version"))
        return out

    def urls(self):
        """ws:// URL of every ready node pod (port 7000, docs/operations.md)."""
        return {name: f"ws://{ip}:7000/ws" for name, (ip, _) in self.pods().items()}

    def pod_of(self, url):
        """The pod whose IP a node URL names."""
        host = url.split("//", 1)[1].split(":", 1)[0]
        for name, (ip, _) in self.pods().items():
            if ip == host:
                return name
        raise KeyError(f"no ready pod has the address of {url}")

    def restarts(self, pod):
        """The restart count of the pod's container."""
        status = json.loads(self.kubectl("get", "pod", pod, "-o", "json"))["status"]
        return sum(c.get("restartCount", 0) for c in status.get("containerStatuses", []))

    def wait_ready(self, timeout=120):
        """Waits until sigc/demo and every one of its pods are Ready again (after a fault)."""
        self.kubectl("wait", "sigc/demo", "--for=condition=Ready", f"--timeout={timeout}s")
        self.kubectl("wait", "pods", "-l", "switchboard.dev/cluster=demo", "--for=condition=Ready",
                     f"--timeout={timeout}s")

    def fault(self, what, pod):
        """e2e/scripts/node fault WHAT default/POD."""
        self.sh(SCRIPTS / "node", "fault", what, f"default/{pod}")

    def wait_for(self, pred, timeout, what):
        """Polls `pred` until it is true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(1)
        raise TimeoutError(f"{what} not within {timeout} s")
