#!/usr/bin/env bash
# Install the system packages listed in system-packages.txt whose check fails (`make system-deps`).
# As root it runs apt-get; otherwise sudo (non-interactive) when that works. Where neither can,
# it prints one paragraph naming what to install and exits 1, so the tests never start without
# the tools they drive.
set -euo pipefail

list=${1:-system-packages.txt}
if [ ! -r "$list" ]; then
  echo "system-deps: cannot read $list (one '<command-or-path> <debian-package>' per line)" >&2
  exit 1
fi

missing_checks=()
packages=()
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  line=${line%%#*}
  read -r check package extra <<<"$line" || true
  [ -z "${check:-}" ] && continue
  if [ -z "${package:-}" ] || [ -n "${extra:-}" ]; then
    echo "system-deps: $list line $lineno: expected '<command-or-path> <debian-package>', got '$line'" >&2
    exit 1
  fi
  if [[ $check == /* ]]; then
    compgen -G "$check" >/dev/null && continue  # a path, or a glob (any version)
  else
    command -v "$check" >/dev/null 2>&1 && continue
  fi
  missing_checks+=("$check")
  # One apt-get argument per package, however many lines name it.
  [[ " ${packages[*]:-} " == *" $package "* ]] || packages+=("$package")
done <"$list"

if [ ${#packages[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  as_root=(none)
fi
if [ "${as_root[*]:-}" = none ] || ! command -v apt-get >/dev/null 2>&1; then
  {
    echo "system-deps: the tests drive system tools that are not installed here (${missing_checks[*]})"
    echo "and this script cannot install them: it needs apt-get (Debian or Ubuntu) and root or"
    echo "password-less sudo. Install the packages ${packages[*]} (on Debian or Ubuntu:"
    echo "sudo apt-get install ${packages[*]}), or the equivalents for your system, then run"
    echo "the command again. The list, with what each tool is for, is $list."
  } | fmt -w 100 >&2
  exit 1
fi

echo "system-deps: installing ${packages[*]} (missing: ${missing_checks[*]})"
export DEBIAN_FRONTEND=noninteractive
# Other jobs on the machine may hold apt's lock; wait for it instead of failing.
apt=(-o DPkg::Lock::Timeout=600 -qq)
"${as_root[@]}" apt-get "${apt[@]}" update >/dev/null
"${as_root[@]}" apt-get "${apt[@]}" install -y --no-install-recommends "${packages[@]}" >/dev/null

still=()
for check in "${missing_checks[@]}"; do
  if [[ $check == /* ]]; then compgen -G "$check" >/dev/null || still+=("$check")
  else command -v "$check" >/dev/null 2>&1 || still+=("$check"); fi
done
if [ ${#still[@]} -gt 0 ]; then
  echo "system-deps: installed ${packages[*]}, but still not found: ${still[*]}." \
    "Check the package names in $list." >&2
  exit 1
fi
