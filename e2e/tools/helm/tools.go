//go:build tools

// Package tools pins helm and kubeconform, which the chart checks build from source.
package tools

import (
	_ "github.com/yannh/kubeconform/cmd/kubeconform"
	_ "helm.sh/helm/v3/cmd/helm"
)
