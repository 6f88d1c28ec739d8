#!/bin/sh
# Generates the development certificate for localhost (certs/dev/), once.
# Private keys are made here, on the machine that uses them, and never
# committed (.gitignore keeps certs/dev/ and *.key out of git).
set -eu
dir="$(dirname "$0")/dev"
[ -f "$dir/localhost.crt" ] && [ -f "$dir/localhost.key" ] && exit 0
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
	-subj "/CN=localhost" \
	-addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
	-keyout "$dir/localhost.key" -out "$dir/localhost.crt" 2>/dev/null
echo "certs: generated $dir/localhost.crt (development only)"
