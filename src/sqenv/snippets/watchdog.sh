# Reads "+ PGID" / "- PGID" lines from sqenv; when sqenv dies (end of input), kills the groups still listed.
pgs=' '
while read -r op pg; do
  case "$op $pgs" in
    "+ "*) pgs="$pgs$pg " ;;
    "- "*" $pg "*) pgs="${pgs%% "$pg" *} ${pgs#* "$pg" }" ;;
  esac
done
# `kill -s NAME -- -PGID`: dash refuses `kill -KILL -- -PGID` ("Illegal number"), killing nothing.
# SIGTERM first, then up to 10 s until the groups are gone (Apptainer unmounts its image, whose FUSE
# server lives in a group of its own, and a SIGKILL would leave it running), then SIGKILL.
for pg in $pgs; do kill -s TERM -- "-$pg" 2>/dev/null; done
n=0
while [ "$n" -lt 50 ]; do
  alive=
  for pg in $pgs; do kill -s 0 -- "-$pg" 2>/dev/null && alive=1; done
  [ -n "$alive" ] || break
  sleep 0.2
  n=$((n + 1))
done
for pg in $pgs; do kill -s KILL -- "-$pg" 2>/dev/null; done
