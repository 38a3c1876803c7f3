#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, where pods actually run: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, containerd (Debian's) + runc, CNI
# (bridge + host-local, Debian's plugins), kubelet, kube-proxy (nftables) and CoreDNS. The
# Kubernetes binaries and CoreDNS come from scripts/build-kube.sh (Go module proxy, cached).
# Used by the real-cluster tests (tests/cluster) and by hand. Needs root.
#
#   scripts/kube-node.sh up          install missing packages, start everything, wait for the
#                                    node to be Ready and DNS to answer
#   scripts/kube-node.sh load TAR..  import `docker save` tarballs into the node's containerd
#   scripts/kube-node.sh env         print KUBECONFIG, KUBECACHEDIR, PATH and the node's address
#   scripts/kube-node.sh status      whether it runs
#   scripts/kube-node.sh logs        print the path of each process's log file
#   scripts/kube-node.sh down        stop everything and restore the host (below); images and
#                                    etcd's data stay in the state directory
#   scripts/kube-node.sh clean       down, then remove the state directory
#
# Network (all private to this machine; override with the variables below):
#   node address  $TRIBUTARY_NODE_IP (10.213.255.1/32) on a port-less bridge trib-node0: the API
#                 server (6443), etcd, the kubelet, CoreDNS (53) and whatever the host serves to
#                 pods listen there, because pods cannot reach the host's 127.0.0.1
#   pods          10.213.0.0/24 on the bridge trib-cni0; an nftables forward rule drops pod
#                 traffic to any other interface, so nothing leaves the machine
#   services      10.213.128.0/24 (`kubernetes` is 10.213.128.1), kube-proxy in nftables mode
#                 with masquerade-all (no br_netfilter needed for pod → Service → pod)
#   DNS           CoreDNS on the node address, serving cluster.local from the API
#
# What it changes on the host and `down` restores: the two bridges (and the pods' veths and
# network namespaces), nftables tables `inet tributary_node`, kube-proxy's and any iptables-nft
# table (filter, nat, mangle, raw) that was not there before, the sysctls the
# kubelet and CNI set (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops,
# net.ipv4.ip_forward), every mount under the state directory and /run/netns/cni-*, the pod
# cgroups (under /tributary-node), /var/log/containers links, and the directories kubelet and
# containerd create outside their configured ones when they did not exist before.
#
# State: ${TRIBUTARY_KUBE_NODE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/tributary/kube-node};
# sockets and pids in /run/tributary-kube-node. One such cluster per machine.
#
# Environment: TRIBUTARY_KUBE_BIN_DIR (the binaries, else scripts/build-kube.sh finds or builds
# them), TRIBUTARY_KUBE_NODE_DIR, TRIBUTARY_NODE_NAME (tributary-node), TRIBUTARY_NODE_IP,
# TRIBUTARY_POD_CIDR, TRIBUTARY_SERVICE_CIDR (both /24).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=host-lib.sh
source "$root/scripts/host-lib.sh"
dir=${TRIBUTARY_KUBE_NODE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/tributary/kube-node}
run=/run/tributary-kube-node
node_name=${TRIBUTARY_NODE_NAME:-tributary-node}
node_ip=${TRIBUTARY_NODE_IP:-10.213.255.1}
pod_cidr=${TRIBUTARY_POD_CIDR:-10.213.0.0/24}
service_cidr=${TRIBUTARY_SERVICE_CIDR:-10.213.128.0/24}
pod_gateway=${pod_cidr%.*/*}.1
service_ip=${service_cidr%.*/*}.1
node_bridge=trib-node0
pod_bridge=trib-cni0
api_port=6443
cgroup_root=/tributary-node
pause_image=tributary.local/pause:3.10
sysctls=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward)
# Directories the kubelet, containerd and CNI create outside their configured roots.
outside_dirs=(/var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /run/netns /var/lib/cni /etc/cni /opt/cni)
# Start order; `down` stops in reverse.
processes=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd coredns kubelet kube-proxy)

die() {
  echo "kube-node.sh: $*" >&2
  exit 1
}
say() { echo "kube-node.sh: $*" >&2; }

alive() { [[ -r $run/$1.pid ]] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

binaries() {
  local name line
  declare -gA bin=()
  if [[ -n ${TRIBUTARY_KUBE_BIN_DIR:-} ]]; then
    for name in "${processes[@]}" kubectl; do
      [[ $name == containerd ]] && continue
      bin[$name]=$TRIBUTARY_KUBE_BIN_DIR/$name
    done
  else
    while read -r line; do
      bin[$(basename "$line")]=$line
    done < <("$root/scripts/build-kube.sh" --node)
  fi
  bin[containerd]=/usr/bin/containerd
  for name in "${processes[@]}" kubectl; do
    [[ -x ${bin[$name]:-} ]] || die "$name not found (${bin[$name]:-none}); run scripts/build-kube.sh"
  done
}

install_packages() {
  local missing=()
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  ((${#missing[@]})) || return 0
  apt_install kube-node.sh "${missing[@]}" || exit 1
}

# start <name> <argv...>: a detached process with its log in $dir/logs and its pid in $run.
start() {
  local name=$1
  shift
  alive "$name" && return 0
  setsid "$@" >>"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$run/$name.pid"
}

# wait_until <seconds> <what> <process> <command...>
wait_until() {
  local timeout=$1 what=$2 process=$3 start=$SECONDS
  shift 3
  until "$@" >/dev/null 2>&1; do
    alive "$process" || die "$process exited while waiting for $what; see $dir/logs/$process.log"
    ((SECONDS - start < timeout)) || die "$what not ready after $timeout s; see $dir/logs/$process.log"
    sleep 0.2
  done
}

kubectl() { KUBECACHEDIR=$dir/kubectl-cache "${bin[kubectl]}" --kubeconfig="$dir/pki/kubeconfig" "$@"; }
ctr() { /usr/bin/ctr --address "$run/containerd.sock" --namespace k8s.io "$@"; }

# Records what `down` restores, once per `up` (a second `up` keeps the first record).
record_host() {
  [[ -e $run/host-state ]] && return 0
  {
    local s d
    for s in "${sysctls[@]}"; do
      echo "sysctl $s $(sysctl -n "$s")"
    done
    for d in "${outside_dirs[@]}"; do
      [[ -e $d ]] || echo "created $d"
    done
    for d in /run/netns/*; do
      [[ -e $d ]] && echo "netns $(basename "$d")"
    done
    nft list tables 2>/dev/null | awk '{ print "nft", $2, $3 }'
  } >"$run/host-state.tmp"
  mv "$run/host-state.tmp" "$run/host-state"
}

network_up() {
  if ! ip link show "$node_bridge" >/dev/null 2>&1; then
    ip link add "$node_bridge" type bridge
    ip addr add "$node_ip/32" dev "$node_bridge"
    ip link set "$node_bridge" up
  fi
  nft -f - <<EOF
table inet tributary_node
delete table inet tributary_node
table inet tributary_node {
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname "$pod_bridge" oifname != "$pod_bridge" drop
    oifname "$pod_bridge" iifname != { "$pod_bridge", "lo" } ct state new drop
  }
}
EOF
}

# A docker-save tarball of a static pause program: the sandbox image (no registry to pull it
# from). It reaps children and exits on SIGTERM/SIGINT.
pause_tarball() {
  local out=$dir/pause.tar tmp
  [[ -s $out ]] && return 0
  tmp=$(mktemp -d)
  cat >"$tmp/pause.c" <<'EOF'
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGTERM, stop);
  signal(SIGINT, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
EOF
  gcc -static -O2 -o "$tmp/pause" "$tmp/pause.c"
  mkdir "$tmp/image" "$tmp/layer"
  tar -C "$tmp" --owner=0 --group=0 --mtime=@0 -cf "$tmp/layer/layer.tar" pause
  local diff config
  diff=$(sha256sum "$tmp/layer/layer.tar" | cut -d' ' -f1)
  mv "$tmp/layer" "$tmp/image/$diff"
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff" >"$tmp/config.json"
  config=$(sha256sum "$tmp/config.json" | cut -d' ' -f1)
  mv "$tmp/config.json" "$tmp/image/$config.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$config" "$pause_image" \
    "$diff" >"$tmp/image/manifest.json"
  tar -C "$tmp/image" -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  rm -rf "$tmp"
}

write_configs() {
  local pki=$dir/pki
  mkdir -p "$dir/cni/net.d" "$dir/cni/ipam"
  cat >"$dir/cni/net.d/10-tributary.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "tributary-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$pod_bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$pod_cidr", "gateway": "$pod_gateway"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$dir/cni/ipam"
      }
    }
  ]
}
EOF
  cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$run/containerd.sock"
[ttrpc]
  address = "$run/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # This machine's init drops CAP_SYS_RESOURCE: a negative oom_score_adj fails every sandbox.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
EOF
  echo "nameserver $node_ip" >"$dir/resolv.conf"
  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: $node_ip
healthzPort: 10248
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$run/containerd.sock
# cgroup v1 here, no systemd; this VM cannot lower oom_score_adj; swap may be on.
cgroupDriver: cgroupfs
cgroupRoot: $cgroup_root
# No KUBE-FIREWALL/canary chains in the host's iptables (kube-proxy's nftables mode needs none).
makeIPTablesUtilChains: false
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
clusterDNS: [$node_ip]
clusterDomain: cluster.local
resolvConf: $dir/resolv.conf
podLogsDir: $dir/pod-logs
maxPods: 60
serializeImagePulls: false
# The tests' disks are shared and fairly full: evict only when really out of space.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
rotateCertificates: false
serverTLSBootstrap: false
EOF
  cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $pki/kubeconfig-kube-proxy}
hostnameOverride: $node_name
bindAddress: $node_ip
healthzBindAddress: $node_ip:10256
metricsBindAddress: $node_ip:10249
clusterCIDR: $pod_cidr
nodePortAddresses: [$node_ip/32]
# Leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  cat >"$dir/Corefile" <<EOF
.:53 {
  bind $node_ip
  errors
  ready $node_ip:8181
  kubernetes cluster.local in-addr.arpa ip6.arpa {
    kubeconfig $pki/kubeconfig tributary-test
    pods insecure
    fallthrough in-addr.arpa ip6.arpa
  }
  cache 5
  loadbalance
}
EOF
}

up() {
  [[ $(id -u) == 0 ]] || die "needs root (kubelet, containerd, network)"
  install_packages
  binaries
  mkdir -p "$dir/logs" "$run"
  chmod 700 "$dir" "$run"
  record_host
  network_up
  local url=https://$node_ip:$api_port etcd_url=http://$node_ip:2379 pki=$dir/pki
  "$root/scripts/kube-pki.sh" "$pki" "$url" "$node_name" "$node_ip" "$service_ip"
  write_configs
  pause_tarball
  local started=$SECONDS

  start etcd "${bin[etcd]}" --name=tributary-node --data-dir="$dir/etcd" \
    --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="http://$node_ip:2380" --initial-advertise-peer-urls="http://$node_ip:2380" \
    --initial-cluster="tributary-node=http://$node_ip:2380" --unsafe-no-fsync=true --log-level=warn
  start kube-apiserver "${bin[kube-apiserver]}" --etcd-servers="$etcd_url" \
    --bind-address="$node_ip" --advertise-address="$node_ip" --secure-port="$api_port" \
    --cert-dir="$dir/apiserver-certs" --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" --client-ca-file="$pki/ca.crt" \
    --token-auth-file="$pki/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$service_cidr" --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" --kubelet-certificate-authority="$pki/ca.crt" \
    --kubelet-preferred-address-types=InternalIP --allow-privileged=false --profiling=false
  wait_until 120 "kube-apiserver" kube-apiserver kubectl get --raw /readyz
  say "API server ready after $((SECONDS - started)) s"

  start kube-controller-manager "${bin[kube-controller-manager]}" \
    --kubeconfig="$pki/kubeconfig-kube-controller-manager" \
    --authentication-kubeconfig="$pki/kubeconfig-kube-controller-manager" \
    --authorization-kubeconfig="$pki/kubeconfig-kube-controller-manager" \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --use-service-account-credentials=true --leader-elect=false --secure-port=0 \
    --cluster-name=tributary-node --profiling=false
  start kube-scheduler "${bin[kube-scheduler]}" --kubeconfig="$pki/kubeconfig-kube-scheduler" \
    --leader-elect=false --secure-port=0 --profiling=false
  start containerd "${bin[containerd]}" --config "$dir/containerd.toml"
  wait_until 60 "containerd" containerd ctr version
  ctr images ls -q | grep -qx "$pause_image" || ctr images import "$dir/pause.tar" >/dev/null
  start coredns "${bin[coredns]}" -conf "$dir/Corefile"
  # The kubelet wants its cgroupRoot to exist in every hierarchy (cgroup v1 here).
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    [[ -L ${hierarchy%/} ]] || mkdir -p "$hierarchy${cgroup_root#/}"
  done
  start kubelet "${bin[kubelet]}" --config="$dir/kubelet.yaml" \
    --kubeconfig="$pki/kubeconfig-kubelet" --root-dir="$dir/kubelet" \
    --hostname-override="$node_name" --node-ip="$node_ip" --v=1
  start kube-proxy "${bin[kube-proxy]}" --config="$dir/kube-proxy.yaml" --masquerade-all
  wait_until 120 "node $node_name Ready" kubelet kubectl wait --for=condition=Ready --timeout=2s "node/$node_name"
  wait_until 60 "CoreDNS" coredns curl -fsS "http://$node_ip:8181/ready"
  # A new namespace's pods wait for its `default` ServiceAccount: prove the controllers run.
  wait_until 60 "the default ServiceAccount" kube-controller-manager kubectl get serviceaccount default
  say "node $node_name Ready after $((SECONDS - started)) s; eval \"\$($0 env)\""
}

load() {
  local tar
  for tar in "$@"; do
    [[ -r $tar ]] || die "cannot read $tar"
    ctr images import "$tar" >/dev/null || die "ctr images import $tar failed"
  done
}

stop_process() {
  local name=$1
  alive "$name" && stop_pid "$(cat "$run/$name.pid")" 10
  rm -f "$run/$name.pid"
}

down() {
  local i name
  # The kubelet first (it would restart what we stop), then every pod, then the rest.
  stop_process kube-proxy
  stop_process kubelet
  if alive containerd; then
    local task
    for task in $(ctr tasks ls -q 2>/dev/null); do
      ctr tasks kill --signal SIGKILL "$task" >/dev/null 2>&1 || true
    done
    sleep 1
    for task in $(ctr tasks ls -q 2>/dev/null); do
      ctr tasks delete --force "$task" >/dev/null 2>&1 || true
    done
  fi
  for ((i = ${#processes[@]} - 1; i >= 0; i--)); do
    stop_process "${processes[i]}"
  done
  # Shims outlive containerd; ours name its socket.
  pkill -KILL -f "containerd-shim.*-address $run/containerd.sock" 2>/dev/null || true
  restore_host
}

restore_host() {
  local target
  # Deepest first: pod volumes, overlay rootfs, then the netns bind mounts.
  findmnt -rn -o TARGET | awk -v d="$dir/" -v r="$run/" 'index($0, d) == 1 || index($0, r) == 1' |
    sort -r | while read -r target; do umount -l "$target" 2>/dev/null || true; done
  kube_proxy_tables
  nft delete table inet tributary_node 2>/dev/null || true
  ip link del "$pod_bridge" 2>/dev/null || true
  ip link del "$node_bridge" 2>/dev/null || true
  local cg
  for cg in /sys/fs/cgroup/*"$cgroup_root"; do
    [[ -d $cg ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  [[ -r $run/host-state ]] || return 0
  local kind name value family table
  declare -A had_netns=() had_table=()
  while read -r kind name value; do
    case $kind in
    sysctl) sysctl -qw "$name=$value" || true ;;
    netns) had_netns[$name]=1 ;;
    nft) had_table["$name $value"]=1 ;;
    esac
  done <"$run/host-state"
  # iptables-nft tables that appeared with the cluster (a kubelet without
  # makeIPTablesUtilChains: false puts KUBE-FIREWALL and canary chains there).
  while read -r family table; do
    case $table in filter | nat | mangle | raw) ;; *) continue ;; esac
    [[ -n ${had_table["$family $table"]:-} ]] || nft delete table "$family" "$table" 2>/dev/null || true
  done < <(nft list tables 2>/dev/null | awk '$2 == "ip" || $2 == "ip6" { print $2, $3 }')
  for target in /run/netns/cni-*; do
    [[ -e $target && -z ${had_netns[$(basename "$target")]:-} ]] || continue
    umount -l "$target" 2>/dev/null || true
    rm -f "$target"
  done
  find /var/log/containers -maxdepth 1 -type l -lname "$dir/*" -delete 2>/dev/null || true
  # They did not exist before `up`: what is in them came from this cluster.
  while read -r kind name value; do
    [[ $kind == created ]] && rm -rf "$name"
  done <"$run/host-state"
  # Nothing runs any more: the pids, sockets and containerd's state go too.
  rm -rf "$run"
}

kube_proxy_tables() {
  nft delete table ip kube-proxy 2>/dev/null || true
  nft delete table ip6 kube-proxy 2>/dev/null || true
}

case ${1:-} in
up) up ;;
load)
  shift
  alive containerd || die "not running; run: $0 up"
  load "$@"
  ;;
down) down ;;
clean)
  down
  rm -rf "$dir"
  ;;
env)
  [[ -r $dir/pki/kubeconfig ]] || die "not set up; run: $0 up"
  binaries
  echo "export KUBECONFIG=$dir/pki/kubeconfig"
  echo "export KUBECACHEDIR=$dir/kubectl-cache"
  echo "export PATH=$(dirname "${bin[kubectl]}"):\$PATH"
  echo "export TRIBUTARY_NODE_IP=$node_ip"
  ;;
status)
  ok=1
  for name in "${processes[@]}"; do
    if alive "$name"; then echo "$name: running"; else echo "$name: not running"; ok=0; fi
  done
  ((ok)) || exit 1
  ;;
logs)
  for name in "${processes[@]}"; do echo "$dir/logs/$name.log"; done
  ;;
*)
  echo "usage: $0 up|load TAR...|env|status|logs|down|clean" >&2
  exit 2
  ;;
esac
