#!/usr/bin/env bash
# Makes every certificate and key the awx-mesh example needs, with receptor's own certificate
# commands (and openssl for the work-signing key pair, as upstream documents):
#   ca.crt, ca.key                      the mesh CA (keep ca.key off the nodes)
#   <node>.crt, <node>.key              one per node; names the node ID and <node>.$DOMAIN
#   work-private.pem, work-public.pem   work signing (control node) / verification (execution)
# Usage: make-certs.sh [OUTDIR]   (default: ./tls)
# Environment:
#   RECEPTOR     the receptor binary (default: receptor on PATH)
#   NODES        node IDs (default: "control hop exec1 exec2")
#   DOMAIN       DNS suffix for each node's certificate name (default: example.com)
#   EXTRA_NAMES  more names for every node certificate, e.g. "ipaddress=10.0.0.5 dnsname=mesh"
#   CA_BITS, KEY_BITS, SIGN_BITS   RSA key sizes (default: 4096, 2048, 4096)
# Existing files are kept, so running it again only adds what is missing (e.g. a new node).
set -euo pipefail

receptor=${RECEPTOR:-receptor}
out=${1:-tls}
read -r -a nodes <<<"${NODES:-control hop exec1 exec2}"
domain=${DOMAIN:-example.com}
read -r -a extra <<<"${EXTRA_NAMES:-}"

mkdir -p "$out"
cd "$out"
umask 077

if [ ! -e ca.crt ]; then
  "$receptor" --cert-init commonname="Receptor Mesh CA" bits="${CA_BITS:-4096}" \
    outcert=ca.crt outkey=ca.key
fi

for node in "${nodes[@]}"; do
  [ -e "$node.crt" ] && continue
  # nodeid= puts the receptor node ID into the certificate: TLS peers and the control service
  # check it against the node they expect.
  "$receptor" --cert-makereq bits="${KEY_BITS:-2048}" commonname="$node" \
    dnsname="$node.$domain" nodeid="$node" "${extra[@]}" \
    outreq="$node.csr" outkey="$node.key"
  # verify=true signs without the interactive "Sign certificate (yes/no)?" prompt.
  "$receptor" --cert-signreq req="$node.csr" cacert=ca.crt cakey=ca.key \
    outcert="$node.crt" verify=true
  rm -f "$node.csr"
done

if [ ! -e work-private.pem ]; then
  openssl genrsa -out work-private.pem "${SIGN_BITS:-4096}" 2>/dev/null
  openssl rsa -in work-private.pem -pubout -out work-public.pem 2>/dev/null
fi
# Certificates and public keys are public; private keys stay 0600.
chmod 0644 ca.crt ./*.crt work-public.pem
echo "certificates and keys are in $PWD"
