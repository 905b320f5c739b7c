"""Running a trained folder on new inputs without the training stack: one predictor per deployable task
(``predictors``: the task's own reading path, PyTorch or ONNX Runtime), the ONNX export and its parity gate
(``onnx_export``) and the HTTP service (``service``)."""
