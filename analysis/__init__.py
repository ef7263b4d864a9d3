"""Analysis of run records (files only): correlation, cost, figures, reports. Never imports the
training code, so it can analyse runs made on another machine."""
