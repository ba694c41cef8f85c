# shellcheck shell=bash disable=SC2154 # REPO, work, CLUSTER, REG* come from the sourcing script
# What every kind run (run.sh, helm.sh) sets up the same way. Sourced after
# nodeimage/lib.sh and lib/dockerd.sh; the caller sets REPO, work, CLUSTER,
# REG_NAME, REG_PORT and REG, and defines nodes() and poll().

# kind_test_roots: the registry image (crane registry serve) and a busybox
# root ($bb, $work/busybox.tar) every test image is made from.
kind_test_roots() {
  REG_IMAGE=criguard.local/crane:$CRANE_VERSION
  if ! docker image inspect "$REG_IMAGE" >/dev/null 2>&1; then
    mkdir -p "$work/crane-root/tmp"; chmod 1777 "$work/crane-root/tmp"
    cp "$(command -v crane)" "$work/crane-root/crane"
    tar -C "$work/crane-root" -c . | docker import -c 'ENTRYPOINT ["/crane"]' - "$REG_IMAGE" >/dev/null
  fi
  # busybox (Debian's static build) as the root of every test image.
  bb=$work/busybox-root
  mkdir -p "$bb/bin" "$bb/tmp" "$bb/etc"; chmod 1777 "$bb/tmp"
  cp /bin/busybox "$bb/bin/busybox"
  for a in sh sleep cat echo ls; do ln -sf busybox "$bb/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$bb/etc/passwd"
  tar --numeric-owner -C "$bb" -cf "$work/busybox.tar" .
}

# kind_cluster_up NODE_IMAGE: the two-node cluster $CLUSTER and its registry
# $REG_NAME on the kind network, each node pulling $REG over plain HTTP
# (criguard-podnet forwards the node's $REG to the registry and gives the node
# its pod network, reading the cluster's nodes with the admin kubeconfig).
kind_cluster_up() {
  kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  docker rm -f "$REG_NAME" >/dev/null 2>&1 || true
  sed "s/^name: .*/name: $CLUSTER/" "$REPO/e2e/kind/kind-config.yaml" >"$work/kind-config.yaml"
  kind create cluster --name "$CLUSTER" --config "$work/kind-config.yaml" --image "$1"
  docker run -d --name "$REG_NAME" --network kind -p "127.0.0.1:$REG_PORT:5000" "$REG_IMAGE" registry serve --address :5000 >/dev/null
  local reg_ip admin n
  reg_ip=$(docker inspect -f '{{(index .NetworkSettings.Networks "kind").IPAddress}}' "$REG_NAME")
  [[ -n $reg_ip ]] || die "the registry has no address on the kind network"
  admin=$(docker exec "$CLUSTER-control-plane" cat /etc/kubernetes/admin.conf)
  for n in $(nodes); do
    docker exec "$n" mkdir -p "/etc/containerd/certs.d/$REG" /etc/criguard-kind
    printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$REG" "$REG" |
      docker exec -i "$n" tee "/etc/containerd/certs.d/$REG/hosts.toml" >/dev/null
    echo "$REG_PORT $reg_ip:5000" | docker exec -i "$n" tee /etc/criguard-kind/registry >/dev/null
    docker exec -i "$n" tee /etc/criguard-kind/kubeconfig >/dev/null <<<"$admin"
  done
  kubectl wait --for=condition=Ready nodes --all --timeout=3m
  poll 240 "every kube-system pod Ready (CoreDNS on the per-node pod network)" \
    kubectl -n kube-system wait --for=condition=Ready pod --all --timeout=10s
}
