#!/usr/bin/env bash
# Source rules checked on every `make check`:
#  1. banned unsafe C functions (as curl bans them);
#  2. layering: a module includes only its own and lower layers' headers.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
rc=0
hits=$(grep -rnE '\b(strcpy|strcat|sprintf|vsprintf|gets|strtok|atoi|atol|atof)\s*\(' src tests/unit 2>/dev/null)
if [[ -n $hits ]]; then
  echo "lint: banned functions (use snprintf, strtol, memcpy with bounds):"; echo "$hits"; rc=1
fi
# Layer of each module; a module may include headers of modules with a lower or equal layer.
declare -A layer=([core]=0 [notify]=2 [obs]=4 [http]=1 [store]=2 [runtime]=2 [proxy]=2 [health]=2 [metrics]=2 [compose]=2
                  [supervisor]=3 [deploy]=3 [acme]=3 [secrets]=3 [backup]=3 [api]=4 [daemon]=5 [cli]=6)
for f in $(find src -name '*.[ch]'); do
  mod=$(echo "$f" | cut -d/ -f2)
  [[ -n ${layer[$mod]:-} ]] || { echo "lint: $f: module '$mod' has no layer in scripts/lint.sh"; rc=1; continue; }
  while IFS= read -r inc; do
    dep=${inc%%/*}
    [[ -n ${layer[$dep]:-} ]] || continue
    if ((layer[$dep] > layer[$mod])); then
      echo "lint: $f includes $inc: $mod (layer ${layer[$mod]}) must not include $dep (layer ${layer[$dep]})"; rc=1
    fi
  done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f")
done
exit $rc
