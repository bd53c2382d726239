//go:build tools

// Package tools pins CoreDNS, the cluster DNS of the real-node e2e (Service names such as
// `etcd` in examples/ resolve through it).
package tools

import _ "github.com/coredns/coredns"
