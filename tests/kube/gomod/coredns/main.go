// Command coredns is CoreDNS with only the plugins the test cluster's DNS uses. The upstream
// main package links every plugin (cloud DNS providers included), which triples the build time;
// plugins register themselves in init, so importing a few gives a server with just those.
// Built by scripts/build-kube.sh (COREDNS_VERSION there).
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
