#!/usr/bin/env bash
# SASS on a machine without a GPU: compiles one hip/ source for sm_90a (nvcc) and disassembles
# the kernels whose mangled names match a pattern, with cuobjdump / nvdisasm taken from their
# PyPI wheels (nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm; fetched once into $SASS_TOOLS,
# default ~/.cache/gatednorm-sass) where the CUDA toolkit here lacks them.  The listing equals
# the device build's (run 155: the wide kernel's loop, address for address).
#   bash scripts/local_sass.sh hip/w4a16.hip 'w4a16_mma_wide_kernelILi0ELb1E' [OUT.sass]
# prints, for each matching kernel, its instruction count and the mix of its longest loop's
# span (the backward branch spanning the most instructions; both sides of any branch inside
# it are counted: the wide kernel's 711 are 354 a chunk plus the K-tail copy's path).
set -euo pipefail
src=${1:?hip source}; pat=${2:?kernel name pattern}; out=${3:-/tmp/local.sass}
cd "$(dirname "$0")/.."
if ! command -v nvdisasm > /dev/null; then
  tools=${SASS_TOOLS:-$HOME/.cache/gatednorm-sass}
  if [ ! -x "$tools/nvidia/cu13/bin/nvdisasm" ]; then
    mkdir -p "$tools/whl"
    python3 -m pip download -q --no-deps -d "$tools/whl" nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
    for w in "$tools"/whl/*.whl; do python3 -m zipfile -e "$w" "$tools"; done
    chmod +x "$tools"/nvidia/cu13/bin/*
  fi
  export PATH=$tools/nvidia/cu13/bin:$PATH
fi
cubin=$(mktemp --suffix=.cubin)
trap 'rm -f "$cubin"' EXIT
nvcc -DGATEDNORM_BUILDING_LIBRARY -Ipybind_free_api/include -Ihip -Ipybind_free_api/src -O3 -std=c++17 -x cu \
  -gencode=arch=compute_90a,code=sm_90a -cubin -o "$cubin" "$src"
cuobjdump -sass "$cubin" > "$out"
python3 - "$out" "$pat" <<'PY'
import collections, re, sys
text, pat = open(sys.argv[1]).read(), sys.argv[2]
for part in re.split(r"\n\s*Function : ", text)[1:]:
    name = part.split("\n", 1)[0].strip()
    if pat not in name:
        continue
    ins = [(int(a, 16), s.strip()) for a, s in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", part)]
    loops = []
    for a, s in ins:
        m = re.search(r"BRA (0x[0-9a-f]+)", s)
        if m and int(m.group(1), 16) < a:
            loops.append((int(m.group(1), 16), a))
    print("%s: %d instructions" % (name, len(ins)))
    if loops:
        lo, hi = max(loops, key=lambda l: l[1] - l[0])
        mix = collections.Counter()
        for a, s in ins:
            if lo <= a <= hi:
                op = s.split()[1] if s.startswith("@") else s.split()[0]
                mix["MOV" if ".MOV" in op or op.startswith("MOV") else op.split(".")[0]] += 1
        print("  loop span %#x-%#x: %d instructions; %s" % (lo, hi, sum(mix.values()), ", ".join("%s %d" % kv for kv in mix.most_common(12))))
PY
echo "listing: $out"
