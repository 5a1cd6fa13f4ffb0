#!/usr/bin/env bash
# Builds dist/x0tta_<version>_<arch>.deb with Debian's own tools (dpkg-deb), on Debian 12.
#
# Layout (docs/operations.md#the-debian-package says why):
#   /opt/x0tta/lib/          the x0tta package and its dependencies at the versions of constraints.txt,
#                            installed with `pip install --target` from wheels only, byte-compiled
#   /usr/bin/x0tta-agent     wrappers that run Debian's /usr/bin/python3.11 in isolated mode (-I -S:
#   /usr/bin/x0tta           no user site, no PYTHON* variables, no dist-packages) on /opt/x0tta/lib
#   /etc/x0tta/agent.toml    conffile: the reference config, every key commented at its default
#   /lib/systemd/system/x0tta-agent.service
#   maintainer scripts from packaging/deb/ (the x0tta system user, its directories, purge)
#
# The eBPF object is package data of x0tta (x0tta/probes/bpf/x0tta_probes.o): `make deb` builds it
# first (`make ebpf`), and this script refuses to package without it.
#
# Environment: DEB_VERSION (default: x0tta.__version__), OUT (default dist), PYTHON (default
# /usr/bin/python3.11: the interpreter the package runs on, so wheels match its ABI).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-/usr/bin/python3.11}
OUT=${OUT:-dist}
WORK=${WORK:-build/deb}
VERSION=${DEB_VERSION:-$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' x0tta/__init__.py)}
ARCH=$(dpkg --print-architecture)
OBJ=x0tta/probes/bpf/x0tta_probes.o

die() { echo "build-deb: $*" >&2; exit 1; }
[ -n "$VERSION" ] || die "no version (x0tta/__init__.py __version__ or DEB_VERSION)"
[ -f "$OBJ" ] || die "$OBJ missing: run 'make ebpf' first (the probes and the guard load it)"
[ -x "$PYTHON" ] || die "$PYTHON missing (Debian package python3.11)"
command -v dpkg-deb >/dev/null || die "dpkg-deb missing (Debian package dpkg)"

t0=$(date +%s)
rm -rf "$WORK/root" "$WORK/wheel"
mkdir -p "$WORK" "$OUT"
STAGE=$WORK/root

# A throwaway venv of Debian's interpreter, only to run pip (Debian's python3 has no pip of its own).
if [ ! -x "$WORK/buildenv/bin/pip" ]; then
  "$PYTHON" -m venv "$WORK/buildenv"
fi
PIP=("$WORK/buildenv/bin/python" -m pip --disable-pip-version-check -q)

# The x0tta wheel (with the eBPF object), then it and its dependencies from wheels only: nothing is
# compiled on the build machine, and every version is the one constraints.txt pins.
"${PIP[@]}" wheel --no-deps -w "$WORK/wheel" .
WHEEL=$(ls "$WORK"/wheel/x0tta-*.whl)
"$PYTHON" -c 'import sys, zipfile; sys.exit("x0tta/probes/bpf/x0tta_probes.o" not in zipfile.ZipFile(sys.argv[1]).namelist())' \
  "$WHEEL" || die "the wheel lacks the eBPF object"
LIB=$STAGE/opt/x0tta/lib
# The dependencies change only with constraints.txt and pyproject.toml: installed and byte-compiled
# once per version of those into $WORK/deps-<hash>, copied into each package. Byte-compiled for the
# target interpreter with the paths the files will have once installed (the x0tta user cannot
# write __pycache__ under /opt).
KEY=$(cat constraints.txt pyproject.toml | "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
DEPS=$WORK/deps-$KEY
if [ ! -d "$DEPS" ]; then
  rm -rf "$WORK"/deps-*
  "${PIP[@]}" install --no-compile --only-binary=:all: --target "$DEPS.tmp" -c constraints.txt "${WHEEL}[fast]"
  rm -rf "$DEPS.tmp/bin" "$DEPS.tmp/x0tta" "$DEPS.tmp"/x0tta-*.dist-info   # scripts of the build venv; x0tta comes below
  if find "$DEPS.tmp" -name '*.pth' | grep -q .; then die "a .pth file among the dependencies: the wrappers do not process them"; fi
  "$PYTHON" -m compileall -q -j0 -d /opt/x0tta/lib "$DEPS.tmp" >/dev/null
  mv "$DEPS.tmp" "$DEPS"
fi
mkdir -p "$(dirname "$LIB")"
cp -a "$DEPS" "$LIB"
"${PIP[@]}" install --no-deps --no-compile --target "$LIB" "$WHEEL"
rm -rf "$LIB/bin"
"$PYTHON" -m compileall -q -j0 -d /opt/x0tta/lib/x0tta "$LIB/x0tta" >/dev/null
# Record what is inside: the versions installed, for `dpkg -L`/audits on the router.
"$PYTHON" - "$LIB" > "$STAGE/opt/x0tta/versions.txt" <<'PY'
import sys
from importlib.metadata import distributions
print("\n".join(sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions(path=[sys.argv[1]]))))
PY

install -d "$STAGE/usr/bin"
for cmd in x0tta-agent:x0tta.agent.main x0tta:x0tta.cli.main; do
  name=${cmd%%:*} mod=${cmd#*:}
  cat > "$STAGE/usr/bin/$name" <<PY
#!$PYTHON -IS
# $name from the x0tta package: Debian's Python on the locked set in /opt/x0tta/lib only.
import sys
sys.path.append("/opt/x0tta/lib")
from $mod import main
sys.exit(main())
PY
  chmod 0755 "$STAGE/usr/bin/$name"
done

install -D -m 0644 configs/agent.toml "$STAGE/etc/x0tta/agent.toml"
install -D -m 0644 systemd/x0tta-agent.service "$STAGE/lib/systemd/system/x0tta-agent.service"
install -d "$STAGE/usr/share/doc/x0tta"
printf 'x0tta %s\nLicense: Apache-2.0 (/usr/share/common-licenses/Apache-2.0)\nPython dependencies: /opt/x0tta/versions.txt\n' \
  "$VERSION" > "$STAGE/usr/share/doc/x0tta/copyright"

install -d "$STAGE/DEBIAN"
for f in postinst prerm postrm; do
  install -m 0755 "packaging/deb/$f" "$STAGE/DEBIAN/$f"
done
echo /etc/x0tta/agent.toml > "$STAGE/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE/" -e "s/@PYVER@/$PYVER/g" \
  packaging/deb/control > "$STAGE/DEBIAN/control"

# Files root-owned whoever builds; the state belongs to the x0tta user, created by postinst. zstd:
# Debian 12's dpkg reads it, and it packs 80 MB in a second where xz takes a minute.
DEB=$OUT/x0tta_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zzstd -z3 --build "$STAGE" "$DEB" >/dev/null
echo "build-deb: $DEB ($(du -h "$DEB" | cut -f1), $(($(date +%s) - t0)) s)"
