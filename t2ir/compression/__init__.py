"""Weight compression codecs (Q4_0) that tract can consume directly."""
