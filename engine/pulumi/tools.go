//go:build tools

// Package tools pins the Pulumi CLI this module builds (see engine/build-tools).
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
