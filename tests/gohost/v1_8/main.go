// Command gohost-v1_8 is a stock go-plugin host for connectors built with
// github.com/hashicorp/go-plugin v1.8.0 (pinned in go.mod); see package hostcmd for its flags.
package main

import "tributary.dev/tests/gohost/hostcmd"

func main() {
	hostcmd.Main()
}
