"""How a run is scored and reported: metrics with bootstrap CIs (``metrics``), calibration errors and temperature
scaling (``calibration``), batched forward passes in the input's order (``forward``), and the results files, plots,
prediction tables and model card (``reports``)."""
