//go:build tools

// Package tools pins the node-side binaries the real-node e2e builds from source: the CNI
// plugins the containerd CRI runs (bridge, host-local, loopback, portmap) and crictl (e2e/down
// removes pod sandboxes through it).
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
