// Command connector-go-v1_6 is the Go test connector (tests/connectors/README.md) built with
// github.com/hashicorp/go-plugin v1.6.3, pinned in go.mod.
package main

import "tributary.dev/tests/testconnector"

func main() {
	testconnector.Main("v1.6.3")
}
