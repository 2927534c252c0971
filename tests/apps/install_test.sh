#!/usr/bin/env bash
# Installing Tessera as a library (docs/INSTALL.md): the CPU build (build-cpu/, scripts/build.sh
# --apps) installs into a temporary prefix; an embedder (tests/install/embedder) finds it with
# find_package(Tessera), links Tessera::tessera, loads a checkpoint trained by the installed
# tessera-train and generates the same text as the installed tessera-generate (same sampling); cpack makes
# a .deb whose every dependency is a Debian package, that dpkg would install here, and that holds
# the apps, the libraries, the headers and the CMake package config.
source "$(dirname "$0")/lib.sh"
root=$TESSERA_ROOT
prefix=$WORK/prefix

# The CPU build the package is made from (nothing to do when scripts/test.sh already built it).
"$root/scripts/build.sh" --apps > "$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
if cmake --install "$root/build-cpu" --prefix "$prefix" > "$WORK/install.log" 2>&1; then
  pass "cmake --install build-cpu --prefix $prefix"
else
  cat "$WORK/install.log"; fail "cmake --install"; finish; exit
fi
for f in bin/tessera-train bin/tessera-generate bin/tessera-data bin/tessera-ckpt bin/tessera-serve \
  lib/libtessera_core.a lib/libtessera_models.a include/tessera/models/gpt.h \
  include/tessera/generate/generator.h lib/cmake/Tessera/TesseraConfig.cmake \
  lib/cmake/Tessera/TesseraTargets.cmake share/tessera/configs/tiny.yaml; do
  [[ -e $prefix/$f ]] && pass "installed $f" || fail "not installed: $f"
done

# The embedder, configured against the prefix only (no path into the source tree).
if cmake -S "$root/tests/install/embedder" -B "$WORK/embedder" -DCMAKE_PREFIX_PATH="$prefix" \
     > "$WORK/embedder.log" 2>&1 && cmake --build "$WORK/embedder" -j2 >> "$WORK/embedder.log" 2>&1; then
  pass "embedder built with find_package(Tessera) + Tessera::tessera"
else
  sed 's/^/    /' "$WORK/embedder.log" | tail -30; fail "embedder build"; finish; exit
fi
if grep -q "$root/src" "$WORK/embedder/CMakeFiles/embedder.dir/flags.make"; then
  fail "the embedder's compile flags point into the source tree (want the prefix's headers)"
fi

# A small model trained by the installed apps, then the same prompt through both.
TESSERA_BIN=$prefix/bin
make_small_data "$WORK/data"
# shellcheck disable=SC2046
"$prefix/bin/tessera-train" "$prefix/share/tessera/configs/tiny.yaml" $(small_sets "$WORK/data") \
  --set train.steps=30 > "$WORK/train.log" 2>&1 || { cat "$WORK/train.log"; fail "installed tessera-train"; }
model=$WORK/run/model.h5
want=$("$prefix/bin/tessera-generate" "$model" --prompt "ROMEO:" --temperature 0.8 --seed 7 -n 30 \
  2> "$WORK/gen.err")
got=$("$WORK/embedder/embedder" "$model" "$WORK/data/tokenizer" "ROMEO:" 2> "$WORK/emb.err")
if [[ $(tr -d '[:space:]' <<< "${want#ROMEO:}") == "" ]]; then
  cat "$WORK/gen.err"; fail "installed tessera-generate printed nothing after the prompt"
elif [[ $got == "$want" ]]; then
  pass "embedder's text equals tessera-generate's: $(printf %q "$got" | head -c 100)"
else
  cat "$WORK/emb.err"; fail "embedder printed $(printf %q "$got"), tessera-generate $(printf %q "$want")"
fi

# The Debian package.
if (cd "$root/build-cpu" && cpack -G DEB -B "$WORK/deb" > "$WORK/cpack.log" 2>&1); then
  deb=$(ls "$WORK"/deb/*.deb)
  pass "cpack -G DEB: $(basename "$deb") ($(du -h "$deb" | cut -f1))"
  depends=$(dpkg-deb -f "$deb" Depends)
  echo "   Depends: $depends"
  [[ -n $depends ]] || fail "the package lists no dependencies"
  for dep in $(tr ',' '\n' <<< "$depends" | sed 's/(.*)//; s/|.*//' | tr -d ' '); do
    # A Debian package: one the archive (apt's index) knows, and installed here.
    if apt-cache show "$dep" > /dev/null 2>&1 && dpkg-query -W "$dep" > /dev/null 2>&1; then
      :
    else
      fail "dependency $dep is not a Debian package installed here"
    fi
  done
  pass "every dependency is a Debian package"
  if dpkg --dry-run -i "$deb" > "$WORK/dpkg.log" 2>&1; then
    pass "dpkg --dry-run -i accepts it (dependencies satisfied)"
  else
    cat "$WORK/dpkg.log"; fail "dpkg --dry-run -i"
  fi
  contents=$(dpkg-deb -c "$deb")
  for f in ./usr/bin/tessera-train ./usr/bin/tessera-serve ./usr/lib/libtessera_core.a \
    ./usr/include/tessera/models/gpt.h ./usr/lib/cmake/Tessera/TesseraConfig.cmake; do
    grep -q " $f\$" <<< "$contents" && pass "package holds $f" || fail "package lacks $f"
  done
else
  cat "$WORK/cpack.log"; fail "cpack -G DEB"
fi
finish
