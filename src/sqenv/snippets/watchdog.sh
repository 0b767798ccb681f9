# Reads "+ PGID" / "- PGID" lines from sqenv; when sqenv dies (end of input), kills the groups still listed.
pgs=' '
while read -r op pg; do
  case "$op $pgs" in
    "+ "*) pgs="$pgs$pg " ;;
    "- "*" $pg "*) pgs="${pgs%% "$pg" *} ${pgs#* "$pg" }" ;;
  esac
done
# `kill -s NAME -- -PGID`: dash refuses `kill -KILL -- -PGID` ("Illegal number"), killing nothing
for pg in $pgs; do kill -s KILL -- "-$pg" 2>/dev/null; done
