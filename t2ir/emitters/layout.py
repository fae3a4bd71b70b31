"""Names of the files an export is made of (no torch needed: the inspection tools read them)."""

GRAPH_FILE = "graph.nnef"
# The final IR is saved beside graph.nnef (tract ignores it) so `t2ir dump` can show it later.
IR_DUMP_NAME = "graph.t2ir"
ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".nnef.tgz")
