"""Model backends behind one small interface (transformers MusicGen first)."""
