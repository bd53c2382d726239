// Command coredns is CoreDNS (github.com/coredns/coredns, pinned in ../../go.mod) with only the
// plugins the e2e node's Corefile uses (e2e/manifests/coredns.yaml), the way CoreDNS documents
// building a custom server: the full build carries every cloud provider's SDK, which costs the
// e2e's cold build minutes for nothing.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

// The plugins in CoreDNS's own order (its plugin.cfg): a Corefile lists them in any order, the
// server chains them in this one.
func init() {
	dnsserver.Directives = []string{
		"ready",
		"health",
		"errors",
		"loadbalance",
		"cache",
		"template",
		"kubernetes",
	}
}

func main() {
	coremain.Run()
}
