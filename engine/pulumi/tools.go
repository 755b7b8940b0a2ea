//go:build tools

// Package tools pins the Pulumi commands this module builds (see engine/build-tools).
package tools

import (
	_ "github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml"
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
)
