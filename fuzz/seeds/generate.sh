#!/usr/bin/env bash
# Regenerates the fuzz seed corpora under fuzz/seeds/ from fresh openssl
# certificates and keys (the formats the build tests cover: ECDSA P-256 with
# PKCS#8 and SEC1 keys, RSA 2048 with a PKCS#1 key, Ed25519, a chain with an
# intermediate, CA bundles). The seeds are committed: run this only to
# change them. Validity does not matter (the fuzz checks turn the validity
# policy off), so the certificates are made valid for 100 years.
#
# Input formats (see fuzz/checks/build.rs and the args checks):
#   materials/       cert PEM, NUL, key PEM [, NUL, CA bundle PEM]...
#   ca_dir/          CA directory entries separated by NUL (a leading
#                    0x01..0x04 byte makes a hidden file, a symlink to the
#                    previous entry, a dangling symlink, a subdirectory)
#   status_request/  raw bytes a client sends to the status listener
#   proxy_args/, example_args/   command-line arguments separated by NUL
set -euo pipefail
cd "$(dirname "$0")"

join() { # out parts... (NUL between parts)
    local out=$1 first=1
    shift
    : >"$out"
    for part in "$@"; do
        if [ $first = 0 ]; then printf '\0' >>"$out"; fi
        first=0
        cat "$part" >>"$out"
    done
}

# materials_der/ from the materials/ seeds: the first certificate's DER and
# the key's DER (see der_as_materials in fuzz/checks/build.rs). Run alone
# with `generate.sh der` to redo only these.
der_seeds() {
    rm -rf materials_der
    mkdir -p materials_der
    python3 - <<'PY'
import base64, os, re
labels = {"PRIVATE KEY": 0, "RSA PRIVATE KEY": 1, "EC PRIVATE KEY": 2}
seen = set()
# Sorted so that the plain seeds keep their names over the variants.
for name in sorted(os.listdir("materials"), key=lambda n: (n in ("both-in-one", "text-around", "chain-bundle"), n)):
    parts = open(os.path.join("materials", name), "rb").read().split(b"\0")
    sections = lambda pem: re.findall(rb"-----BEGIN ([A-Z ]+)-----\r?\n(.*?)-----END", pem, re.S)
    certs = [base64.b64decode(body) for label, body in sections(parts[0]) if label == b"CERTIFICATE"]
    keys = [(labels[label.decode()], base64.b64decode(body)) for label, body in sections(parts[1]) if label.decode() in labels]
    if not certs or not keys:
        continue
    cert, (selector, key) = certs[0], keys[0]
    seed = bytes([selector]) + len(cert).to_bytes(2, "big") + cert + key
    if seed in seen:
        continue
    seen.add(seed)
    with open(os.path.join("materials_der", name), "wb") as out:
        out.write(seed)
PY
}
if [ "${1:-}" = der ]; then
    der_seeds
    exit 0
fi

# materials/ seeds for encrypted keys and CRLs: a self-signed ECDSA leaf
# with its key encrypted (PBES2, PBKDF2 + AES-256-CBC, OpenSSL's 2,048
# iterations) and the passphrase part; a client CA with an empty CRL and
# one that revokes a serial. Run alone with `generate.sh secrets`.
secret_seeds() {
    local w
    w=$(mktemp -d)
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$w/leaf.key" 2>/dev/null
    openssl req -x509 -new -key "$w/leaf.key" -out "$w/leaf.crt" -days 36500 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost" 2>/dev/null
    openssl pkcs8 -topk8 -v2 aes-256-cbc -iter 2048 -in "$w/leaf.key" -out "$w/leaf.enc.key" \
        -passout pass:correct-horse-battery 2>/dev/null
    printf 'passphrase:correct-horse-battery\n' >"$w/pass"
    printf 'passphrase:wrong-passphrase\n' >"$w/wrong"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$w/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$w/ca.key" -out "$w/ca.crt" -days 36500 -subj /CN=client-ca \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    (
        cd "$w"
        : >index.txt
        echo 01 >crlnumber
        printf '[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\ncrlnumber=crlnumber\ndefault_md=sha256\ndefault_crl_days=36500\n' >ca.cnf
        openssl ca -config ca.cnf -gencrl -keyfile ca.key -cert ca.crt -out empty.crl 2>/dev/null
        # Revoke a client certificate the CA issued.
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key \
            -out client.csr -subj /CN=client 2>/dev/null
        openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 36500 \
            -out client.crt 2>/dev/null
        openssl ca -config ca.cnf -keyfile ca.key -cert ca.crt -revoke client.crt 2>/dev/null
        openssl ca -config ca.cnf -gencrl -keyfile ca.key -cert ca.crt -out revoked.crl 2>/dev/null
    )
    mkdir -p materials
    join materials/encrypted-key "$w/leaf.crt" "$w/leaf.enc.key" "$w/pass"
    join materials/encrypted-key-wrong "$w/leaf.crt" "$w/leaf.enc.key" "$w/wrong"
    join materials/crl-empty "$w/leaf.crt" "$w/leaf.key" "$w/ca.crt" "$w/empty.crl"
    join materials/crl-revoked "$w/leaf.crt" "$w/leaf.key" "$w/ca.crt" "$w/revoked.crl"
    join materials/crl-without-ca "$w/leaf.crt" "$w/leaf.key" "$w/revoked.crl"
    rm -rf "$w"
}
if [ "${1:-}" = secrets ]; then
    secret_seeds
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ossl() { openssl "$@" 2>/dev/null; }
subj() { echo "/CN=$1"; }

# Keys: PKCS#8 (BEGIN PRIVATE KEY), SEC1 (BEGIN EC PRIVATE KEY), PKCS#1 (BEGIN RSA PRIVATE KEY).
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ec.key"
ossl ec -in "$work/ec.key" -out "$work/ec.sec1.key"
ossl genrsa -traditional -out "$work/rsa.key" 2048
ossl genpkey -algorithm ED25519 -out "$work/ed.key"
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$work/other.key"

selfsign() { # key out cn
    ossl req -x509 -new -key "$1" -out "$2" -days 36500 -subj "$(subj "$3")" \
        -addext "subjectAltName=DNS:localhost"
}
selfsign "$work/ec.key" "$work/ec.crt" localhost
selfsign "$work/rsa.key" "$work/rsa.crt" localhost
selfsign "$work/ed.key" "$work/ed.crt" localhost

# A root, an intermediate and a leaf it issued.
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/root.key"
ossl req -x509 -new -key "$work/root.key" -out "$work/root.crt" -days 36500 -subj "$(subj root)" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/int.key"
ossl req -new -key "$work/int.key" -out "$work/int.csr" -subj "$(subj intermediate)"
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' >"$work/ca.ext"
ossl x509 -req -in "$work/int.csr" -CA "$work/root.crt" -CAkey "$work/root.key" -CAcreateserial \
    -days 36500 -extfile "$work/ca.ext" -out "$work/int.crt"
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/leaf.key"
ossl req -new -key "$work/leaf.key" -out "$work/leaf.csr" -subj "$(subj localhost)"
printf 'subjectAltName=DNS:localhost\n' >"$work/leaf.ext"
ossl x509 -req -in "$work/leaf.csr" -CA "$work/int.crt" -CAkey "$work/int.key" -CAcreateserial \
    -days 36500 -extfile "$work/leaf.ext" -out "$work/leaf.crt"
cat "$work/leaf.crt" "$work/int.crt" >"$work/chain.crt"
cat "$work/root.crt" "$work/int.crt" >"$work/bundle.crt"


rm -rf materials ca_dir status_request proxy_args example_args
mkdir -p materials ca_dir status_request proxy_args example_args

join materials/ec-pkcs8 "$work/ec.crt" "$work/ec.key"
join materials/ec-sec1 "$work/ec.crt" "$work/ec.sec1.key"
join materials/rsa-pkcs1 "$work/rsa.crt" "$work/rsa.key"
join materials/ed25519 "$work/ed.crt" "$work/ed.key"
join materials/chain-mtls "$work/chain.crt" "$work/leaf.key" "$work/root.crt"
join materials/chain-bundle "$work/chain.crt" "$work/leaf.key" "$work/bundle.crt" "$work/ec.crt"
join materials/mismatch "$work/ec.crt" "$work/other.key"
{ printf 'subject=CN=localhost\n'; cat "$work/ec.crt"; printf '\n# trailing text\n'; } >"$work/text.crt"
join materials/text-around "$work/text.crt" "$work/ec.key"
cat "$work/ec.key" "$work/ec.crt" >"$work/both.pem"
join materials/both-in-one "$work/both.pem" "$work/both.pem"
printf -- '-----BEGIN CERTIFICATE-----\r\nMIIB\r\n-----END CERTIFICATE-----\r\n' >"$work/crlf.crt"
join materials/crlf-short "$work/crlf.crt" "$work/ec.key"
secret_seeds
der_seeds

# The fixed identity the ca_dir target serves while its CA files are fuzzed.
mkdir -p ../fixtures
cp "$work/ec.crt" ../fixtures/identity.crt
cp "$work/ec.key" ../fixtures/identity.key

join ca_dir/one-root "$work/root.crt"
join ca_dir/bundle-and-root "$work/bundle.crt" "$work/root.crt"
printf '\x01' >"$work/hidden-prefix"
cat "$work/hidden-prefix" "$work/root.crt" >"$work/hidden.crt"
printf '\x02' >"$work/link"
printf '\x03' >"$work/dangling"
printf '\x04' >"$work/subdir"
join ca_dir/entries "$work/root.crt" "$work/link" "$work/dangling" "$work/subdir" "$work/hidden.crt" "$work/int.crt"
join ca_dir/not-pem "$work/root.crt" "$work/ec.key"

printf 'GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n' >status_request/metrics
printf 'GET /status HTTP/1.1\r\n\r\n' >status_request/status
printf 'GET /healthz HTTP/1.0\r\n\r\n' >status_request/healthz
printf 'GET / HTTP/1.1\r\n\r\n' >status_request/root
printf 'HEAD /metrics HTTP/1.1\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n' >status_request/head
printf 'POST /status HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}' >status_request/post
printf 'GET /metrics?x=1 HTTP/1.1\n\n' >status_request/bare-lf
# Heads at the page's 8 KiB limit: one without a blank line (431), one whose
# blank line straddles the limit (431 too), one whose blank line ends at it.
pad() { head -c "$1" /dev/zero | tr '\0' a; }
start='GET /status HTTP/1.1\r\nX-Pad: ' # 29 bytes
{ printf "$start"; pad 8200; } >status_request/too-large
{ printf "$start"; pad $((8190 - 29)); printf '\r\n\r\n'; } >status_request/straddles-limit
{ printf "$start"; pad $((8188 - 29)); printf '\r\n\r\n'; } >status_request/ends-at-limit

args() { # out args... (NUL between args)
    local out=$1
    shift
    printf '%s' "$1" >"$out"
    shift
    for arg in "$@"; do printf '\0%s' "$arg" >>"$out"; done
}
args example_args/minimal --cert tls.crt --key tls.key
args example_args/all --cert tls.crt --key tls.key --client-ca ca.crt --client-ca-dir cas \
    --interval-ms 250 --listen 127.0.0.1:0 --detector hash --handshake-timeout-ms 5000
args example_args/equals --cert=tls.crt --key=tls.key --listen=[::1]:8443 --detector=metadata
args example_args/crl-passphrase-events --cert tls.crt --key tls.key --key-passphrase-file pass.txt \
    --client-ca ca.crt --crl a.crl --crl=b.crl --events off
args example_args/help --help
args example_args/bad --cert tls.crt --interval-ms 0 --detector nope
args proxy_args/minimal --cert tls.crt --key tls.key --listen 127.0.0.1:8443 --target 127.0.0.1:8080
args proxy_args/all --listen=0.0.0.0:6380 --target backend.internal:6379 --cert tls.crt --key tls.key \
    --client-ca ca.crt --client-ca-dir cas --interval 500ms --status 127.0.0.1:9100 --max-connections 100 \
    --handshake-timeout 5s --connect-timeout 1m --drain-timeout 1h --threads 2
args proxy_args/crl-passphrase-events --listen 127.0.0.1:0 --target 127.0.0.1:1 --cert c --key k \
    --key-passphrase-file pass.txt --client-ca-dir cas --crl a.crl --crl=b.crl --events=on
args proxy_args/help --help
args proxy_args/bad --listen 127.0.0.1:0 --interval 5 --threads 0 --target :80
