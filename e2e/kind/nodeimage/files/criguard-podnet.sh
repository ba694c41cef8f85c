#!/bin/bash
# Pod networking for the offline kind node image, which has no kindnetd: every
# few seconds this node writes its CNI config for its own podCIDR (bridge +
# host-local + portmap) and routes every other node's podCIDR via that node's
# address on the kind network. It also keeps the e2e registry reachable as
# localhost:PORT on the node's host network (containerd and criguard pull
# from there) when /etc/criguard-kind/registry holds "PORT ADDRESS:PORT".
# Being a boot-time service, it survives `docker restart` of the node.
set -u
conf=/etc/cni/net.d/10-criguard-podnet.conflist
self=$(cat /etc/hostname)
kubeconfig() {
  local f
  for f in /etc/criguard-kind/kubeconfig /etc/kubernetes/admin.conf; do [[ -f $f ]] && { echo "$f"; return; }; done
}
registry() {
  [[ -f /etc/criguard-kind/registry ]] || return 0
  local port dest; read -r port dest </etc/criguard-kind/registry
  iptables -t nat -C OUTPUT -p tcp -d 127.0.0.1 --dport "$port" -j DNAT --to-destination "$dest" 2>/dev/null ||
    iptables -t nat -A OUTPUT -p tcp -d 127.0.0.1 --dport "$port" -j DNAT --to-destination "$dest"
  iptables -t nat -C POSTROUTING -p tcp -s 127.0.0.1 -d "${dest%:*}" --dport "${dest#*:}" -j MASQUERADE 2>/dev/null ||
    iptables -t nat -A POSTROUTING -p tcp -s 127.0.0.1 -d "${dest%:*}" --dport "${dest#*:}" -j MASQUERADE
}
while sleep 2; do
  registry
  kc=$(kubeconfig) || continue
  [[ -n $kc ]] || continue
  nodes=$(kubectl --kubeconfig "$kc" --request-timeout=5s get nodes -o \
    jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' 2>/dev/null) || continue
  while read -r name cidr ip; do
    [[ -n $cidr && -n $ip ]] || continue
    if [[ $name == "$self" ]]; then
      want='{"cniVersion":"1.0.0","name":"criguard-podnet","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,"hairpinMode":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"'$cidr'"}]],"routes":[{"dst":"0.0.0.0/0"}]}},{"type":"portmap","capabilities":{"portMappings":true}}]}'
      [[ "$(cat "$conf" 2>/dev/null)" == "$want" ]] || { mkdir -p "${conf%/*}"; echo "$want" >"$conf.tmp" && mv "$conf.tmp" "$conf"; }
    else
      ip route replace "$cidr" via "$ip" 2>/dev/null
    fi
  done <<<"$nodes"
done
