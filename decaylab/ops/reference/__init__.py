"""Pure-torch implementations of decayed linear attention: ground truth and CPU paths."""
