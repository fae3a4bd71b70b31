"""Weight compression: the Q4_0 codec, encodings (how constants are stored), pluggable methods, the report."""
