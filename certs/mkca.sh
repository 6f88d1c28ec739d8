#!/bin/sh
# Test PKI for the TLS tests: certs/mkca.sh OUTDIR [name...]
#
# Makes in OUTDIR, once (files already there and still valid are kept):
#   ca.key ca.crt             a test certificate authority
#   NAME.key NAME.crt         a server certificate signed by the CA for each
#                             NAME (default: localhost mail.example.com
#                             smtp.another.com); SAN DNS:NAME, and for
#                             localhost also IP:127.0.0.1
#   client.key client.crt     a client certificate (CN=client.example)
#                             signed by the CA
#   selfsigned.key selfsigned.crt
#                             a self-signed client certificate
#                             (CN=selfsigned.example)
#   server.p12                PKCS#12 bundle of localhost's key, certificate
#                             and the CA, passphrase "test-pass"
# Keys are ECDSA P-256. Everything here is for tests only and is never
# committed (.gitignore keeps *.key, *.p12 and certs/test/ out of git).
set -eu

if [ $# -lt 1 ]; then
	echo "usage: $0 OUTDIR [name...]" >&2
	exit 2
fi
out=$1
shift
[ $# -gt 0 ] || set -- localhost mail.example.com smtp.another.com

mkdir -p "$out"
umask 077
work=$(mktemp -d "${TMPDIR:-/tmp}/mkca.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# A configuration of our own, so that the system openssl.cnf adds nothing.
cat > "$work/openssl.cnf" <<'EOF'
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ client_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ selfsigned_ext ]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
EOF

# newkey FILE: an ECDSA P-256 key.
newkey() {
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# serial: a random positive serial number.
serial() {
	echo "0x$(openssl rand -hex 8)" | sed 's/^0x[89a-f]/0x7/'
}

# install TMPFILE... : moves freshly made files into OUTDIR (each rename
# is atomic, so a reader never sees half a file).
install_files() {
	for f in "$@"; do
		mv -f "$work/$f" "$out/$f"
	done
}

# valid NAME: NAME.crt and NAME.key exist, the certificate is signed by the
# current CA and the key matches it.
valid() {
	[ -s "$out/$1.crt" ] && [ -s "$out/$1.key" ] || return 1
	openssl verify -CAfile "$out/ca.crt" -purpose any "$out/$1.crt" >/dev/null 2>&1 || return 1
	a=$(openssl x509 -in "$out/$1.crt" -noout -pubkey 2>/dev/null) || return 1
	b=$(openssl pkey -in "$out/$1.key" -pubout 2>/dev/null) || return 1
	[ "$a" = "$b" ]
}

# sign NAME SUBJECT EXTSECTION: NAME.key + NAME.crt signed by the CA.
sign() {
	newkey "$work/$1.key"
	openssl req -new -config "$work/openssl.cnf" -key "$work/$1.key" -subj "$2" \
		-out "$work/$1.csr" 2>/dev/null
	openssl x509 -req -in "$work/$1.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
		-set_serial "$(serial)" -days 825 -sha256 \
		-extfile "$work/openssl.cnf" -extensions "$3" -out "$work/$1.crt" 2>/dev/null
	install_files "$1.key" "$1.crt"
}

# --- the CA (a new CA invalidates everything signed by the old one)
if ! { [ -s "$out/ca.crt" ] && [ -s "$out/ca.key" ] &&
	openssl x509 -in "$out/ca.crt" -noout -checkend 86400 >/dev/null 2>&1; }; then
	newkey "$work/ca.key"
	openssl req -x509 -new -config "$work/openssl.cnf" -key "$work/ca.key" \
		-subj "/O=luasmtpd tests/CN=luasmtpd test CA" -extensions ca_ext \
		-set_serial "$(serial)" -days 3650 -sha256 -out "$work/ca.crt" 2>/dev/null
	install_files ca.key ca.crt
	rm -f "$out/server.p12"
fi

# --- one server certificate per name
for name in "$@"; do
	case $name in
	*[!A-Za-z0-9.-]* | "")
		echo "mkca.sh: not a host name: '$name'" >&2
		exit 2
		;;
	esac
	valid "$name" && continue
	san="DNS:$name"
	[ "$name" = localhost ] && san="DNS:localhost,IP:127.0.0.1"
	cat >> "$work/openssl.cnf" <<EOF
[ server_ext_$name ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $san
EOF
	sign "$name" "/CN=$name" "server_ext_$name"
	[ "$name" = localhost ] && rm -f "$out/server.p12"
done

# --- the client certificate signed by the CA
valid client || sign client "/O=luasmtpd tests/CN=client.example" client_ext

# --- the self-signed client certificate
if ! { [ -s "$out/selfsigned.crt" ] && [ -s "$out/selfsigned.key" ]; }; then
	newkey "$work/selfsigned.key"
	openssl req -x509 -new -config "$work/openssl.cnf" -key "$work/selfsigned.key" \
		-subj "/CN=selfsigned.example" -extensions selfsigned_ext \
		-set_serial "$(serial)" -days 825 -sha256 -out "$work/selfsigned.crt" 2>/dev/null
	install_files selfsigned.key selfsigned.crt
fi

# --- localhost as PKCS#12 (needs the localhost certificate)
if [ ! -s "$out/server.p12" ]; then
	valid localhost || {
		cat >> "$work/openssl.cnf" <<'EOF'
[ server_ext_p12 ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost,IP:127.0.0.1
EOF
		sign localhost "/CN=localhost" server_ext_p12
	}
	openssl pkcs12 -export -inkey "$out/localhost.key" -in "$out/localhost.crt" \
		-certfile "$out/ca.crt" -name localhost -passout pass:test-pass \
		-out "$work/server.p12" 2>/dev/null
	install_files server.p12
fi

# Readable by whoever runs the server under test (same user); nothing else.
chmod 600 "$out"/*.key "$out/server.p12"
chmod 644 "$out"/*.crt
exit 0
