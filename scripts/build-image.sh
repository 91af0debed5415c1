#!/usr/bin/env bash
# Build certgate's container image with no registry and no container daemon: Debian's buildah
# (vfs storage, chroot isolation) assembles it FROM scratch out of
#   - the release binary, debug info stripped (kept beside the archive as certgate-VERSION.debug,
#     linked with .gnu_debuglink, for gdb/perf on a core or a profile),
#   - the shared libraries it links (from ldd: glibc, libgcc_s, the loader),
#   - the CA certificates (/etc/ssl/certs/ca-certificates.crt: HTTPS to DynamoDB and CRL URLs),
#   - /etc/nsswitch.conf (hosts: files dns, as distroless),
#   - /etc/passwd and /etc/group with the non-root user nonroot (65532), and the directories
#     certgate writes owned by it (/var/lib/certgate, /var/cache/certgate, /run/certgate, /tmp),
# with the same layout, user, entrypoint and command as the Dockerfile (which builds on
# distroless/cc for users with a registry), and OCI labels/annotations (version, revision,
# source, licenses). It writes an OCI archive and prints its size:
#
#   target/image/certgate-VERSION.oci.tar     (image name docker.io/library/certgate:VERSION,
#                                              the chart's default image.repository: certgate)
#   target/image/certgate-VERSION.debug       (the debug info of the binary in the image)
#   target/image/certgate-VERSION.cdx.json    (CycloneDX SBOM of the Rust crates, scripts/sbom.py)
#   target/image/man1/, target/image/completions/  (man pages; bash, zsh and fish completions)
#
# Load it: `podman load -i …`, `ctr -n k8s.io images import …`, `kind load image-archive …`
# (README "Install"). Needs root and buildah (SETUP_IMAGE=1 scripts/setup.sh installs it).
# PROFILE=debug: put the debug build in instead (archive certgate-VERSION-debug.oci.tar); the test
# suite does, to check the image without a ~12-minute release build on a fresh 2-core machine.
# CERTGATE_BIN: use this already built binary instead of running cargo build.
# IMAGE_NAME: the name recorded in the archive (default docker.io/library/certgate:VERSION).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

command -v buildah >/dev/null || { echo "buildah is missing: run SETUP_IMAGE=1 scripts/setup.sh (as root)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "build-image.sh runs buildah as root (vfs storage, chroot isolation)" >&2; exit 1; }

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE=${IMAGE_SOURCE:-https://github.com/certgate/certgate}   # also Chart.yaml's home/sources
LICENSE=$(sed -n 's/^license = "\(.*\)"/\1/p' Cargo.toml | head -1)
PROFILE=${PROFILE:-release}
OUT=$ROOT/target/image
case $PROFILE in
  release) suffix="" ;;
  debug) suffix=-debug ;;
  *) echo "PROFILE must be release or debug, not $PROFILE" >&2; exit 1 ;;
esac
IMAGE_NAME=${IMAGE_NAME:-docker.io/library/certgate:$VERSION$suffix}
ARCHIVE=$OUT/certgate-$VERSION$suffix.oci.tar
DEBUG_INFO=$OUT/certgate-$VERSION$suffix.debug

if [ -z "${CERTGATE_BIN:-}" ]; then
  if [ "$PROFILE" = release ]; then
    cargo build --release --locked --quiet --bin certgate
  else
    # --all-targets: the feature set of the test build, so after `cargo test` nothing rebuilds.
    cargo build --locked --quiet --all-targets
  fi
  CERTGATE_BIN=target/$PROFILE/certgate
fi
[ -x "$CERTGATE_BIN" ] || { echo "no certgate binary at $CERTGATE_BIN" >&2; exit 1; }

# buildah's own storage under target/, so the build touches nothing system-wide and leaves
# nothing behind but the archive.
export BUILDAH_ISOLATION=chroot
STORE=$OUT/buildah
BUILDAH=(buildah --storage-driver vfs --root "$STORE/root" --runroot "$STORE/run")
mkdir -p "$OUT"
stage=$(mktemp -d "$OUT/rootfs.XXXXXX")
ctr=""
cleanup() {
  [ -z "$ctr" ] || "${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$stage"
}
trap cleanup EXIT

# The root filesystem, staged in a directory and copied in as one layer.
install -d "$stage/usr/local/bin" "$stage/etc/ssl/certs" "$stage/etc/certgate"
objcopy --only-keep-debug "$CERTGATE_BIN" "$DEBUG_INFO"
objcopy --strip-debug --add-gnu-debuglink="$DEBUG_INFO" \
  "$CERTGATE_BIN" "$stage/usr/local/bin/certgate"
chmod 0755 "$stage/usr/local/bin/certgate"
# Every library the binary needs, at the path the loader resolves it to, plus the loader
# (the binary's PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2).
while read -r lib; do
  install -D -m 0644 "$(readlink -f "$lib")" "$stage$lib"
done < <(ldd "$CERTGATE_BIN" | grep -o '/[^ ]*' | sort -u)
interp=$(readelf -l "$CERTGATE_BIN" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[ -f "$stage$interp" ] || { echo "the loader $interp is not in the image" >&2; exit 1; }
chmod 0755 "$stage$interp"
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "no CA certificates at $ca (apt-get install ca-certificates)" >&2; exit 1; }
install -m 0644 "$ca" "$stage$ca"
# The users of distroless (root, nobody, nonroot=65532), so the Dockerfile's image and this
# one agree on names and ids.
cat >"$stage/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$stage/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
# Names (a Service's, in `certgate probe` of the chart's helm test; DynamoDB and CRL hosts)
# are looked up in /etc/hosts, then DNS, as in distroless; without this file glibc asks DNS
# first and never reads /etc/hosts when DNS answers "no such name".
printf 'hosts: files dns\n' >"$stage/etc/nsswitch.conf"
chmod 0644 "$stage/etc/passwd" "$stage/etc/group" "$stage/etc/nsswitch.conf"
install -d -m 0700 "$stage/root"
install -d -m 0700 -o 65532 -g 65532 "$stage/home/nonroot" \
  "$stage/var/lib/certgate" "$stage/var/cache/certgate" "$stage/run/certgate"
install -d -m 1777 "$stage/tmp"
# Reproducible-ish: every file dated at the commit, not at the build.
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
find "$stage" -exec touch -h -d "@$epoch" {} +

ctr=$("${BUILDAH[@]}" from scratch)
mnt=$("${BUILDAH[@]}" mount "$ctr")
cp -a "$stage/." "$mnt/"
"${BUILDAH[@]}" umount "$ctr" >/dev/null

created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
meta=(
  "org.opencontainers.image.title=certgate"
  "org.opencontainers.image.description=External authorization for mutual-TLS identities (Envoy ext_authz, forward-auth)"
  "org.opencontainers.image.version=$VERSION"
  "org.opencontainers.image.revision=$REVISION"
  "org.opencontainers.image.source=$SOURCE"
  "org.opencontainers.image.licenses=$LICENSE"
  "org.opencontainers.image.created=$created"
)
config=(
  --user 65532:65532 --workingdir /
  --entrypoint '["/usr/local/bin/certgate"]'
  --cmd 'serve --config /etc/certgate/certgate.yaml'
  --env CERTGATE_CONFIG=/etc/certgate/certgate.yaml
  --port 9001 --port 9002 --port 9901
  --os linux --arch "$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')"
  --created-by "scripts/build-image.sh"
)
for kv in "${meta[@]}"; do config+=(--label "$kv" --annotation "$kv"); done
"${BUILDAH[@]}" config "${config[@]}" "$ctr"

rm -f "$ARCHIVE"
"${BUILDAH[@]}" commit --quiet --format oci --disable-compression=false --timestamp "$epoch" --rm "$ctr" \
  "oci-archive:$ARCHIVE:$IMAGE_NAME" >/dev/null
ctr=""
# Only the archive is kept; the image in buildah's storage is not needed any more.
"${BUILDAH[@]}" rmi --all >/dev/null 2>&1 || true

# Beside the archive: the SBOM of the crates in the binary (CycloneDX JSON), and for
# packagers the man pages and shell completions.
SBOM=$OUT/certgate-$VERSION$suffix.cdx.json
python3 scripts/sbom.py "$SBOM" >/dev/null
rm -rf "$OUT/man1" "$OUT/completions"
"$CERTGATE_BIN" man --out-dir "$OUT/man1"
mkdir -p "$OUT/completions"
"$CERTGATE_BIN" completions bash >"$OUT/completions/certgate.bash"
"$CERTGATE_BIN" completions zsh >"$OUT/completions/_certgate"
"$CERTGATE_BIN" completions fish >"$OUT/completions/certgate.fish"

size() { du -b "$1" | cut -f1 | numfmt --to=iec --suffix=B; }
echo "image: ${ARCHIVE#"$ROOT/"} ($IMAGE_NAME): $(size "$ARCHIVE") archive, $(du -sb "$stage" | cut -f1 | numfmt --to=iec --suffix=B) unpacked (binary $(size "$stage/usr/local/bin/certgate") stripped; debug info in ${DEBUG_INFO##*/}; SBOM ${SBOM##*/})"
