#!/usr/bin/env bash
# Device call 2: model part B, then wait (up to $1 s) for the build.
W=/tmp/w
if [ -f .devB/model.partB ] && [ ! -f $W/smol.gguf ]; then
  cat $W/model.partA .devB/model.partB > $W/smol.gguf && rm $W/model.partA
  echo "$(cat .devB/model.sha256)  $W/smol.gguf" | sha256sum -c
fi
end=$((SECONDS + ${1:-400}))
while [ ! -f $W/build.rc ] && [ $SECONDS -lt $end ]; do sleep 5; done
cat $W/build.rc 2>/dev/null; tail -n 3 $W/build.log
grep -m1 -A25 '^FAILED' $W/build.log
[ -f $W/build.end ] && echo "build took $(( $(cat $W/build.end) - $(cat $W/build.start) )) s"
