#%Module1.0
## @MARKER@
## Environment Modules (Tcl) module file: `module use DIR; module load NAME`. `sqenv module` rewrites it.

proc ModulesHelp { } {
    puts stderr @HELP@
}

module-whatis @NAME@
module-whatis @WHATIS@

prepend-path PATH @BIN@
@SETENV@
