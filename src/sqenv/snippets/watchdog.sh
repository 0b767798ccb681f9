# Reads "+ PGID" / "t PGID" / "- PGID" lines from sqenv; when sqenv dies (end of input), kills the groups
# still listed. `t` groups (tools run in Apptainer) get SIGTERM and up to 10 s to go first: Apptainer
# then unmounts its image, whose FUSE server lives in a group of its own (a SIGKILL leaves it running).
pgs=' '
soft=' '
while read -r op pg; do
  case "$op $pgs" in
    "+ "*) pgs="$pgs$pg " ;;
    "t "*) pgs="$pgs$pg " soft="$soft$pg " ;;
    "- "*" $pg "*) pgs="${pgs%% "$pg" *} ${pgs#* "$pg" }" ;;
  esac
done
# `kill -s NAME -- -PGID`: dash refuses `kill -KILL -- -PGID` ("Illegal number"), killing nothing.
term=
for pg in $soft; do
  case $pgs in *" $pg "*) kill -s TERM -- "-$pg" 2>/dev/null && term="$term $pg" ;; esac
done
n=0
while [ -n "$term" ] && [ "$n" -lt 50 ]; do
  alive=
  for pg in $term; do kill -s 0 -- "-$pg" 2>/dev/null && alive=1; done
  [ -n "$alive" ] || break
  sleep 0.2
  n=$((n + 1))
done
for pg in $pgs; do kill -s KILL -- "-$pg" 2>/dev/null; done
