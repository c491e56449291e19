"""Training: :func:`fit`, the one θ-update loop for every problem, its result, its checkpoint
format and where it computes (here or on Ray)."""
