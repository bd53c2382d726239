//go:build tools

// Package tools pins the Centrifugo server so `go build` can build it from this module.
package tools

import _ "github.com/centrifugal/centrifugo/v6"
