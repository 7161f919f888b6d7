#!/usr/bin/env bash
# Create the Secrets the fedssl manifests mount (nothing secret is ever committed):
#
#   fedssl-ca             ca.crt                      the federation's own CA (SuperNodes, SuperExec, flwr CLI trust it)
#   superlink-tls         tls.crt, tls.key            SuperLink server certificate, SAN = the Service's DNS names
#                                                     (+ localhost/127.0.0.1 for `kubectl port-forward`)
#   superexec-auth        serverapp, clientapp        shared secrets SuperLink<->SuperExec and SuperNode<->SuperExec
#   supernode-keys        supernode-0 .. supernode-N-1  OpenSSH ECDSA P-384 keys of the StatefulSet's SuperNodes
#   jetson-supernode-keys <node name> ...             one key per Jetson node (the DaemonSet picks its node's key)
#
# Keys are generated in a temporary folder that is deleted on exit. The public halves (ca.crt
# and the SuperNodes' *.pub, needed for `flwr supernode register` and the flwr CLI) are written
# to --public-dir. Every Secret is rendered with `kubectl create secret ... --dry-run=client -o yaml`,
# then applied with `kubectl apply -f -` (or only printed with --print: works offline).
#
# Usage: k8s/create-secrets.sh [--namespace fedssl] [--supernodes 2] [--jetson "node-a node-b"]
#                              [--san extra.dns.name]... [--public-dir k8s/.local] [--print] [--force]
#        k8s/create-secrets.sh --add supernode-2 [--add jetson-c]... [--namespace fedssl] [--print]
#   --add only adds new SuperNode keys to the existing Secrets (supernode-<i> to supernode-keys,
#   any other name to jetson-supernode-keys) with `kubectl patch`, leaving the CA and the other
#   keys alone; with --print it prints the merge patches instead.
set -euo pipefail

NAMESPACE=fedssl
SUPERNODES=2
JETSON_NODES=""
EXTRA_SANS=()
ADD=()
PUBLIC_DIR="$(cd "$(dirname "$0")" && pwd)/.local"
PRINT=0
FORCE=0
DAYS=825

die() { echo "create-secrets: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --namespace) NAMESPACE="${2:?}"; shift 2 ;;
    --supernodes) SUPERNODES="${2:?}"; shift 2 ;;
    --jetson) JETSON_NODES="${2?}"; shift 2 ;;
    --san) EXTRA_SANS+=("${2:?}"); shift 2 ;;
    --public-dir) PUBLIC_DIR="${2:?}"; shift 2 ;;
    --print) PRINT=1; shift ;;
    --force) FORCE=1; shift ;;
    --add) ADD+=("${2:?}"); shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$SUPERNODES" =~ ^[0-9]+$ ]] || die "--supernodes must be a number, got '$SUPERNODES'"
for node in $JETSON_NODES; do
  [[ "$node" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] || die "--jetson: '$node' is not a Kubernetes node name"
done
for node in "${ADD[@]}"; do
  [[ "$node" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] || die "--add: '$node' is not a pod or node name"
done
for tool in openssl ssh-keygen kubectl; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed"
done
newkey() { ssh-keygen -q -t ecdsa -b 384 -N "" -C "$2" -f "$1/$2"; }

if ((${#ADD[@]})); then  # scale out: new keys only
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  umask 077
  mkdir -p "$PUBLIC_DIR/supernode-keys"
  for name in "${ADD[@]}"; do
    secret=jetson-supernode-keys
    [[ "$name" =~ ^supernode-[0-9]+$ ]] && secret=supernode-keys
    newkey "$WORK" "$name"
    cp "$WORK/$name.pub" "$PUBLIC_DIR/supernode-keys/" && chmod go+r "$PUBLIC_DIR/supernode-keys/$name.pub"
    patch="{\"data\":{\"$name\":\"$(base64 -w0 < "$WORK/$name")\"}}"
    if [[ $PRINT -eq 1 ]]; then
      echo "$secret $patch"
    else
      kubectl patch secret "$secret" --namespace "$NAMESPACE" --type merge -p "$patch"
    fi
  done
  echo "create-secrets: public keys of ${ADD[*]} in $PUBLIC_DIR/supernode-keys" >&2
  exit 0
fi

if [[ $PRINT -eq 0 && $FORCE -eq 0 ]] && kubectl get secret fedssl-ca -n "$NAMESPACE" >/dev/null 2>&1; then
  die "Secrets already exist in namespace '$NAMESPACE'. A new CA and new SuperNode keys break every \
registered SuperNode; pass --force to replace them anyway."
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
umask 077
cd "$WORK"

# 1. The CA and the SuperLink's server certificate (ECDSA P-256, SAN = what clients dial).
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days "$DAYS" -subj "/CN=fedssl federation CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.crt 2>/dev/null
sans="DNS:superlink,DNS:superlink.${NAMESPACE},DNS:superlink.${NAMESPACE}.svc"
sans+=",DNS:superlink.${NAMESPACE}.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
for san in "${EXTRA_SANS[@]}"; do
  if [[ "$san" =~ ^[0-9.]+$ || "$san" == *:* ]]; then sans+=",IP:${san}"; else sans+=",DNS:${san}"; fi
done
openssl ecparam -name prime256v1 -genkey -noout -out tls.key 2>/dev/null
openssl req -new -key tls.key -subj "/CN=superlink.${NAMESPACE}.svc" -out tls.csr 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$sans" > tls.ext
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days "$DAYS" \
  -extfile tls.ext -out tls.crt 2>/dev/null
openssl verify -CAfile ca.crt tls.crt >/dev/null

# 2. Shared secrets for SuperExec authentication (raw bytes, here 64 hex characters).
openssl rand -hex 32 | tr -d '\n' > serverapp
openssl rand -hex 32 | tr -d '\n' > clientapp

# 3. SuperNode keys: Flower 1.41 reads OpenSSH ECDSA keys on a NIST curve.
mkdir -p keys jetson-keys
for ((i = 0; i < SUPERNODES; i++)); do newkey keys "supernode-$i"; done
for node in $JETSON_NODES; do newkey jetson-keys "$node"; done

# 4. Render the Secrets (labels let `kubectl get secret -l app.kubernetes.io/part-of=fedssl` find them).
from_files() {  # from_files DIR: --from-file for every private key in DIR
  local f
  for f in "$1"/*; do [[ -e "$f" && "$f" != *.pub ]] && printf -- '--from-file=%s\n' "$f"; done
  return 0
}
render() {  # render KIND NAME ARGS...: one Secret as YAML, labelled
  local kind="$1" name="$2"; shift 2
  echo "---"
  kubectl create secret "$kind" "$name" --namespace "$NAMESPACE" "$@" --dry-run=client -o yaml \
    | kubectl label --local -f - app.kubernetes.io/part-of=fedssl --dry-run=client -o yaml
}
{
  render generic fedssl-ca --from-file=ca.crt
  render tls superlink-tls --cert=tls.crt --key=tls.key
  render generic superexec-auth --from-file=serverapp --from-file=clientapp
  mapfile -t args < <(from_files keys)
  render generic supernode-keys "${args[@]}"
  mapfile -t args < <(from_files jetson-keys)
  render generic jetson-supernode-keys "${args[@]}"
} > secrets.yaml

# 5. Public halves for the operator: the CA for the flwr CLI, the keys to register.
mkdir -p "$PUBLIC_DIR/supernode-keys"
cp ca.crt "$PUBLIC_DIR/ca.crt"
rm -f "$PUBLIC_DIR"/supernode-keys/*.pub
cp keys/*.pub jetson-keys/*.pub "$PUBLIC_DIR/supernode-keys/" 2>/dev/null || true
chmod -R go+rX "$PUBLIC_DIR"

if [[ $PRINT -eq 1 ]]; then
  cat secrets.yaml
else
  kubectl apply -f - < secrets.yaml
fi
echo "create-secrets: CA and SuperNode public keys in $PUBLIC_DIR" >&2
