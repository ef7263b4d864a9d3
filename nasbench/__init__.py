"""nasbench: the shared ground of the suite (spaces, supernet execution, training, budget,
data, evaluation, run records). It never imports ``methods`` or ``experiments``."""
