//go:build tools

// Package tools pins the YAML language host this module builds (see engine/build-tools).
package tools

import _ "github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml"
