//go:build tools

// Package tools pins Traefik, the L7 proxy of the outside-access e2e: it runs as a pod on the
// real node, reads the Ingress objects the operator creates and ends TLS for clients outside
// the cluster.
package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
