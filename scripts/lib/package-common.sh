# Shared by scripts/package-test and scripts/package-boot-test (sourced, not run): PASS/FAIL
# bookkeeping and the Debian mirror to install from.
# shellcheck shell=bash

fails=0
pass() { echo "PASS  $*"; }
fail() {
  echo "FAIL  $*"
  fails=$((fails + 1))
}
indent() { sed 's/^/      /'; }
# check DESCRIPTION CMD...: PASS if CMD succeeds, else FAIL with its output.
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$what"; else
    fail "$what"
    [ -z "$out" ] || indent <<<"$out"
  fi
}

# The mirror to install bookworm from: $DEBIAN_MIRROR, else the one this machine's apt fetches
# bookworm (not -security/-updates) from, else deb.debian.org.
debian_mirror() {
  local mirror=${DEBIAN_MIRROR:-}
  if [ -z "$mirror" ]; then
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null |
      awk '$2 == "bookworm" { print $1; exit }')
    mirror=${mirror%/}
  fi
  echo "${mirror:-http://deb.debian.org/debian}"
}

# finish NAME: the closing line; exits 1 if any check failed.
finish() {
  echo
  if [ "$fails" = 0 ]; then
    echo "$1: all checks passed"
  else
    echo "$1: $fails check(s) FAILED" >&2
    exit 1
  fi
}
