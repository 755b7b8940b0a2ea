//go:build tools

// Package tools pins what the provider's main package and its schema generator import; build
// copies that main package out of the module cache and generates the files it embeds.
package tools

import (
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
	_ "github.com/pulumi/pulumi/pkg/v3/codegen/schema"
)
