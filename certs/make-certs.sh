#!/bin/sh
# make-certs.sh: make a CA and a serving certificate for the slo-guard
# admission webhook with openssl only, for people without the slo-guard binary.
#
# It does what `slo-guard certs --service ...` does, with the same flags (and a
# few more):
#   - a CA (ECDSA P-256, 10 years), kept and reused if it is already in the
#     output directory, so re-running rotates the serving certificate without
#     changing the caBundle;
#   - a serving certificate (ECDSA P-256, SHA-256) signed by that CA, with the
#     SANs <svc>, <svc>.<ns>, <svc>.<ns>.svc, <svc>.<ns>.svc.cluster.local,
#     plus any --dns names and --ip addresses;
#   - ca.crt, ca.key, tls.crt, tls.key in the output directory (keys mode 0600);
#   - the caBundle (base64 of ca.crt, one line) on stdout. Everything else goes
#     to stderr, so CA_BUNDLE="$(./make-certs.sh ...)" works.
#
# Portable: POSIX sh, OpenSSL >= 1.1.1 or LibreSSL >= 3 (macOS). It uses its own
# openssl config file, never the system one.
#
# Usage: make-certs.sh [options]
#   -o, --out-dir DIR        output directory (env SLO_GUARD_CERT_DIR; default ./slo-guard-certs)
#   -s, --service NAME       Service name (default slo-guard)
#   -n, --namespace NS       Service namespace (default slo-guard)
#       --dns NAME           extra DNS SAN, repeatable (e.g. localhost)
#       --ip ADDR            extra IP SAN, repeatable (e.g. 127.0.0.1)
#       --validity-days N    serving certificate validity in days (default 365)
#       --ca-validity-days N CA validity in days when a new CA is made (default 3650)
#       --new-ca             make a new CA even if ca.crt/ca.key exist (changes the caBundle)
#       --cluster-domain D   cluster DNS domain (default cluster.local)
#   -h, --help               this help
#
# Examples:
#   ./make-certs.sh --out-dir ./tls --service slo-guard --namespace slo-guard
#   CA_BUNDLE="$(./make-certs.sh -o /tmp/sg --dns localhost --ip 127.0.0.1)"

set -eu

usage() {
    sed -n '2,/^$/p' "$0" | sed -e 's/^# \{0,1\}//' >&2
}

die() {
    printf 'make-certs.sh: error: %s\n' "$*" >&2
    exit 1
}

log() {
    printf '%s\n' "$*" >&2
}

need_arg() {
    # $1 = flag, $2 = number of remaining args
    [ "$2" -ge 2 ] || die "$1 needs a value"
}

out_dir="${SLO_GUARD_CERT_DIR:-./slo-guard-certs}"
service="slo-guard"
namespace="slo-guard"
validity_days=365
ca_validity_days=3650
cluster_domain="cluster.local"
new_ca=0
extra_dns=""
extra_ips=""

while [ $# -gt 0 ]; do
    case "$1" in
        -o|--out-dir)         need_arg "$1" $#; out_dir="$2"; shift 2 ;;
        --out-dir=*)          out_dir="${1#*=}"; shift ;;
        -s|--service)         need_arg "$1" $#; service="$2"; shift 2 ;;
        --service=*)          service="${1#*=}"; shift ;;
        -n|--namespace)       need_arg "$1" $#; namespace="$2"; shift 2 ;;
        --namespace=*)        namespace="${1#*=}"; shift ;;
        --dns)                need_arg "$1" $#; extra_dns="$extra_dns $2"; shift 2 ;;
        --dns=*)              extra_dns="$extra_dns ${1#*=}"; shift ;;
        --ip)                 need_arg "$1" $#; extra_ips="$extra_ips $2"; shift 2 ;;
        --ip=*)               extra_ips="$extra_ips ${1#*=}"; shift ;;
        --validity-days)      need_arg "$1" $#; validity_days="$2"; shift 2 ;;
        --validity-days=*)    validity_days="${1#*=}"; shift ;;
        --ca-validity-days)   need_arg "$1" $#; ca_validity_days="$2"; shift 2 ;;
        --ca-validity-days=*) ca_validity_days="${1#*=}"; shift ;;
        --cluster-domain)     need_arg "$1" $#; cluster_domain="$2"; shift 2 ;;
        --cluster-domain=*)   cluster_domain="${1#*=}"; shift ;;
        --new-ca)             new_ca=1; shift ;;
        -h|--help)            usage; exit 0 ;;
        *)                    usage; die "unknown argument: $1" ;;
    esac
done

command -v openssl >/dev/null 2>&1 || die "openssl not found on PATH"

# --- input checks -----------------------------------------------------------
is_uint() {
    case "$1" in ''|*[!0-9]*) return 1 ;; *) [ "$1" -gt 0 ] ;; esac
}
is_uint "$validity_days" || die "--validity-days must be a positive integer, got '$validity_days'"
is_uint "$ca_validity_days" || die "--ca-validity-days must be a positive integer, got '$ca_validity_days'"

# RFC 1123 label (Service names and namespaces are DNS labels).
is_dns_label() {
    printf '%s' "$1" | grep -Eq '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'
}
# DNS name, optionally a leading wildcard label.
is_dns_name() {
    printf '%s' "$1" | grep -Eq '^(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$'
}
is_ipv4() {
    printf '%s' "$1" | grep -Eq '^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$'
}
is_ipv6() {
    # Loose check (hex groups and colons, optional embedded IPv4); openssl rejects the rest.
    printf '%s' "$1" | grep -Eq '^[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*$'
}

is_dns_label "$service" || die "--service '$service' is not a valid DNS label"
is_dns_label "$namespace" || die "--namespace '$namespace' is not a valid DNS label"
is_dns_name "$cluster_domain" || die "--cluster-domain '$cluster_domain' is not a valid DNS name"
for d in $extra_dns; do
    is_dns_name "$d" || die "--dns '$d' is not a valid DNS name"
done
for ip in $extra_ips; do
    is_ipv4 "$ip" || is_ipv6 "$ip" || die "--ip '$ip' is not an IPv4 or IPv6 address"
done

# --- files ------------------------------------------------------------------
umask 077
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/slo-guard-certs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM HUP

ca_crt="$out_dir/ca.crt"
ca_key="$out_dir/ca.key"
tls_crt="$out_dir/tls.crt"
tls_key="$out_dir/tls.key"

# New ECDSA P-256 key in PKCS#8 PEM ("BEGIN PRIVATE KEY"). ecparam+pkcs8 works
# on every OpenSSL and LibreSSL, unlike some genpkey options.
new_key() {
    openssl ecparam -name prime256v1 -genkey -noout -out "$work/sec1.key" 2>/dev/null \
        || die "openssl could not make an ECDSA P-256 key"
    openssl pkcs8 -topk8 -nocrypt -in "$work/sec1.key" -out "$1"
    rm -f "$work/sec1.key"
}

# Public key of a private key or of a certificate, for comparison.
pub_of_key() { openssl pkey -in "$1" -pubout 2>/dev/null; }
pub_of_crt() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }

serial() { printf '0x%s' "$(openssl rand -hex 16)"; }

# SAN list.
san="DNS:$service,DNS:$service.$namespace,DNS:$service.$namespace.svc,DNS:$service.$namespace.svc.$cluster_domain"
for d in $extra_dns; do san="$san,DNS:$d"; done
for ip in $extra_ips; do san="$san,IP:$ip"; done

cat > "$work/openssl.cnf" <<EOF
[ req ]
distinguished_name = req_dn
prompt             = no
utf8               = yes
string_mask        = utf8only

[ req_dn ]
CN = placeholder

[ v3_ca ]
basicConstraints       = critical, CA:TRUE, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier   = hash

[ v3_server ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = $san
EOF

# --- CA -----------------------------------------------------------------------
if [ "$new_ca" -eq 0 ] && [ -s "$ca_crt" ] && [ -s "$ca_key" ]; then
    [ "$(pub_of_key "$ca_key")" = "$(pub_of_crt "$ca_crt")" ] \
        || die "$ca_key does not match $ca_crt (use --new-ca to replace both)"
    # Refuse to sign with a CA that expires before the new serving certificate.
    openssl x509 -in "$ca_crt" -noout -checkend "$((validity_days * 86400))" >/dev/null \
        || die "the CA in $ca_crt expires within $validity_days days; use --new-ca (this changes the caBundle)"
    log "reusing the CA in $ca_crt (the caBundle does not change)"
else
    new_key "$work/ca.key"
    openssl req -x509 -new -sha256 \
        -config "$work/openssl.cnf" -extensions v3_ca \
        -key "$work/ca.key" \
        -subj "/O=slo-guard/CN=slo-guard-ca ($service.$namespace)" \
        -days "$ca_validity_days" -set_serial "$(serial)" \
        -out "$work/ca.crt"
    mv -f "$work/ca.key" "$ca_key"
    mv -f "$work/ca.crt" "$ca_crt"
    chmod 600 "$ca_key"
    chmod 644 "$ca_crt"
    log "made a new CA, valid $ca_validity_days days: $ca_crt"
fi

# --- serving certificate ------------------------------------------------------
new_key "$work/tls.key"
openssl req -new -sha256 \
    -config "$work/openssl.cnf" \
    -key "$work/tls.key" \
    -subj "/O=slo-guard/CN=$service.$namespace.svc" \
    -out "$work/tls.csr"
openssl x509 -req -sha256 \
    -in "$work/tls.csr" \
    -CA "$ca_crt" -CAkey "$ca_key" -set_serial "$(serial)" \
    -days "$validity_days" \
    -extfile "$work/openssl.cnf" -extensions v3_server \
    -out "$work/tls.crt" 2>/dev/null \
    || die "openssl could not sign the serving certificate"

# Check before replacing anything.
openssl verify -CAfile "$ca_crt" "$work/tls.crt" >/dev/null \
    || die "the new serving certificate does not verify against $ca_crt"
[ "$(pub_of_key "$work/tls.key")" = "$(pub_of_crt "$work/tls.crt")" ] \
    || die "the new serving key does not match its certificate"

mv -f "$work/tls.key" "$tls_key"
mv -f "$work/tls.crt" "$tls_crt"
chmod 600 "$tls_key"
chmod 644 "$tls_crt"

log "wrote $tls_crt and $tls_key, valid $validity_days days"
log "SANs: $(printf '%s' "$san" | sed 's/,/, /g')"
log ""
log "Create or update the Secret (type kubernetes.io/tls, with ca.crt):"
log "  kubectl -n $namespace create secret generic $service-tls --type=kubernetes.io/tls \\"
log "    --from-file=tls.crt=$tls_crt --from-file=tls.key=$tls_key --from-file=ca.crt=$ca_crt \\"
log "    --dry-run=client -o yaml | kubectl apply -f -"
log "caBundle (stdout):"

# The caBundle: base64 of the CA certificate PEM, one line.
openssl base64 -A -in "$ca_crt"
printf '\n'
