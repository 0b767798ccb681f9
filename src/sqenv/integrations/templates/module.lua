-- -*- lua -*-
-- @MARKER@
-- Lmod module file: `module use DIR; module load NAME`. `sqenv module` rewrites it.

whatis(@NAME@)
whatis(@WHATIS@)
help(@HELP@)

prepend_path("PATH", @BIN@)
@SETENV@
